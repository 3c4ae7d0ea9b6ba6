//! SCRAM-SHA-256 password authentication for admin SQL (RFC 5802 / RFC 7677, as PostgreSQL
//! does it), on pgwire's `AuthMechanism`/`AuthDriver` building blocks. pgwire's own SCRAM
//! comes only with its TLS stack (ring/rustls), which this build does not carry; this one
//! needs HMAC and SHA-256 only.
//!
//! The server knows the plain password (`[admin] password`), so each connection gets a fresh
//! random salt and the salted password is derived then (4096 iterations). No channel binding
//! (`SCRAM-SHA-256-PLUS` needs TLS): clients sending `y,,` or `n,,` are accepted, `p=` is
//! refused. The user name is not checked (as with PostgreSQL, the startup packet's user is
//! the one that counts; any name is accepted).

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::Sink;
use hmac::{Hmac, KeyInit, Mac};
use pgwire::api::ClientInfo;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthState};
use pgwire::api::auth::{AuthDriver, AuthOutcome, DefaultServerParameterProvider, StartupHandler};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::sync::Arc;

const MECHANISM: &str = "SCRAM-SHA-256";
const ITERATIONS: u32 = 4096;

/// Startup handler: protocol negotiation, then SCRAM-SHA-256 against the admin password.
pub(crate) struct ScramStartup {
    driver: AuthDriver<Arc<DefaultServerParameterProvider>>,
    password: Arc<super::sql::Secret>,
}

impl ScramStartup {
    pub(crate) fn new(
        password: Arc<super::sql::Secret>,
        params: Arc<DefaultServerParameterProvider>,
    ) -> Self {
        ScramStartup {
            driver: AuthDriver::new(params),
            password,
        }
    }
}

#[async_trait]
impl StartupHandler for ScramStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                let mechanism = Box::new(Scram {
                    password: Arc::clone(&self.password),
                    state: State::Start,
                });
                self.driver.begin_authentication(client, mechanism).await?
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                self.driver.advance_authentication(client, message).await?
            }
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { final_message, .. } => {
                self.driver
                    .complete_authentication(client, final_message)
                    .await
            }
        }
    }
}

enum State {
    Start,
    /// After the server-first message.
    Sent {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        salted: [u8; 32],
    },
    Done,
}

struct Scram {
    password: Arc<super::sql::Secret>,
    state: State,
}

fn bad(what: &str) -> AuthState {
    AuthState::Failed(PgWireError::InvalidScramMessage(what.to_string()))
}

#[async_trait]
impl AuthMechanism for Scram {
    async fn begin(&mut self, _client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        Ok(AuthState::InProgress(Authentication::SASL(vec![
            MECHANISM.to_string(),
        ])))
    }

    async fn next(
        &mut self,
        client: &(dyn ClientInfo + Send + Sync),
        message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                let initial = message.into_sasl_initial_response()?;
                if initial.auth_method != MECHANISM {
                    return Ok(AuthState::Failed(PgWireError::UnsupportedSASLAuthMethod(
                        initial.auth_method,
                    )));
                }
                let data = initial.data.unwrap_or_default();
                let Ok(text) = std::str::from_utf8(&data) else {
                    return Ok(bad("client-first-message is not UTF-8"));
                };
                let Some((gs2_header, client_first_bare)) = split_gs2(text) else {
                    return Ok(bad("client-first-message: bad GS2 header"));
                };
                let Some(client_nonce) = attribute(client_first_bare, 'r') else {
                    return Ok(bad("client-first-message: no nonce"));
                };
                let salt = random_bytes::<16>();
                let nonce = format!("{client_nonce}{}", b64(&random_bytes::<18>()));
                let server_first = format!("r={nonce},s={},i={ITERATIONS}", b64(&salt));
                let salted = hi(self.password.0.as_bytes(), &salt, ITERATIONS);
                self.state = State::Sent {
                    gs2_header: gs2_header.to_string(),
                    client_first_bare: client_first_bare.to_string(),
                    server_first: server_first.clone(),
                    nonce,
                    salted,
                };
                Ok(AuthState::InProgress(Authentication::SASLContinue(
                    server_first.into_bytes().into(),
                )))
            }
            State::Sent {
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
                salted,
            } => {
                let response = message.into_sasl_response()?;
                let Ok(text) = std::str::from_utf8(&response.data) else {
                    return Ok(bad("client-final-message is not UTF-8"));
                };
                let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
                    return Ok(bad("client-final-message: no proof"));
                };
                if attribute(without_proof, 'c') != Some(&b64(gs2_header.as_bytes()))
                    || attribute(without_proof, 'r') != Some(&nonce)
                {
                    return Ok(bad(
                        "client-final-message: channel binding or nonce mismatch",
                    ));
                }
                let Ok(proof) = base64::engine::general_purpose::STANDARD.decode(proof) else {
                    return Ok(bad("client-final-message: proof is not base64"));
                };
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_key = hmac(&salted, b"Client Key");
                let stored_key: [u8; 32] = Sha256::digest(client_key).into();
                let signature = hmac(&stored_key, auth_message.as_bytes());
                let recovered: Vec<u8> = proof
                    .iter()
                    .zip(signature.iter())
                    .map(|(p, s)| p ^ s)
                    .collect();
                let recovered_stored: [u8; 32] = Sha256::digest(&recovered).into();
                if proof.len() != 32 || !constant_time_eq(&recovered_stored, &stored_key) {
                    let user = pgwire::api::auth::LoginInfo::from_client_info(client)
                        .user()
                        .unwrap_or_default()
                        .to_owned();
                    return Ok(AuthState::Failed(PgWireError::InvalidPassword(user)));
                }
                let server_key = hmac(&salted, b"Server Key");
                let server_signature = hmac(&server_key, auth_message.as_bytes());
                Ok(AuthState::Ok {
                    final_message: Some(Authentication::SASLFinal(
                        format!("v={}", b64(&server_signature)).into_bytes().into(),
                    )),
                    identity: None,
                })
            }
            State::Done => Err(PgWireError::InvalidSASLState),
        }
    }
}

/// `n,,rest` / `y,,rest` → (`n,,`, `rest`); channel binding (`p=`) and authzid are refused.
fn split_gs2(text: &str) -> Option<(&str, &str)> {
    let header_len = if text.starts_with("n,,") || text.starts_with("y,,") {
        3
    } else {
        return None;
    };
    Some((&text[..header_len], &text[header_len..]))
}

/// The value of `name=` among comma-separated SCRAM attributes.
fn attribute(text: &str, name: char) -> Option<&str> {
    text.split(',').find_map(|a| {
        let mut chars = a.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &a[2..])
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Random bytes from the operating system (`/dev/urandom`), falling back to the std hasher's
/// OS-seeded keys if it cannot be read.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut out));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in out.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_matches_rfc7677_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let salted = hi(b"pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let sig = hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        assert_eq!(b64(&proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let server_sig = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
        assert_eq!(
            b64(&server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn gs2_and_attributes() {
        assert_eq!(split_gs2("n,,n=,r=abc"), Some(("n,,", "n=,r=abc")));
        assert_eq!(split_gs2("y,,n=,r=abc"), Some(("y,,", "n=,r=abc")));
        assert_eq!(split_gs2("p=tls-server-end-point,,n=,r=abc"), None);
        assert_eq!(attribute("n=,r=abc", 'r'), Some("abc"));
        assert_eq!(attribute("c=biws,r=x,p=y", 'c'), Some("biws"));
        assert_eq!(attribute("c=biws", 'r'), None);
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac"));
    }
}
