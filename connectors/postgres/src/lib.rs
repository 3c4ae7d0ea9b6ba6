//! weir PostgreSQL connector.
