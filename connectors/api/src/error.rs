//! The one error type connectors return.
//!
//! Errors are either *transient* (a retry may succeed: network, a restarting server) or
//! *definite* (retrying cannot help: a purged binlog, a dropped slot, bad data); the runtime
//! retries the first with backoff and stops the pipeline with the message of the second.
//! Messages say what happened, where, and what to do; causes stay in the `source()` chain.

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`ConnectorError`].
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// An error from a source or sink.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A retry may succeed.
    #[error("{message}")]
    Transient {
        /// What failed and where.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// Retrying cannot help; the operator must act.
    #[error("{message}")]
    Definite {
        /// What failed, where, and what to do.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
}

impl ConnectorError {
    /// A transient error without a cause.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A definite error without a cause.
    pub fn definite(message: impl Into<String>) -> Self {
        Self::Definite {
            message: message.into(),
            source: None,
        }
    }

    /// A transient error with its cause.
    pub fn transient_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Transient {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A definite error with its cause.
    pub fn definite_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Definite {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An I/O failure: transient unless the kind says retrying is pointless.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match err.kind() {
            PermissionDenied | NotFound | InvalidInput | InvalidData | Unsupported
            | ReadOnlyFilesystem | IsADirectory | NotADirectory | InvalidFilename
            | FileTooLarge => Self::definite_from(context, err),
            _ => Self::transient_from(context, err),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}
