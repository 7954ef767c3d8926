//! A blocking client of the control socket, for the CLI: sends a typed [`Request`] and
//! reads the typed reply of that operation (see [`super::protocol`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::protocol::{ErrorBody, Progress, Request};

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the haconn daemon at {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("the haconn daemon did not answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the haconn daemon answered something unreadable: {0}")]
    BadReply(String),
    #[error("the haconn daemon refused the request ({code}): {message}")]
    Refused { code: String, message: String },
}

impl ClientError {
    /// The error as the JSON object `--output json` prints: `{"code", "message"}`; codes
    /// are the protocol's, plus `unreachable`, `io` and `bad-reply` for the client's own.
    pub fn body(&self) -> ErrorBody {
        let code = match self {
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Io(_) => "io",
            ClientError::BadReply(_) => "bad-reply",
            ClientError::Refused { code, .. } => code,
        };
        let message = match self {
            ClientError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ErrorBody {
            code: code.to_string(),
            message,
        }
    }
}

/// The envelope of every reply line.
#[derive(Deserialize)]
struct Envelope {
    ok: Option<bool>,
    error: Option<ErrorBody>,
}

/// Sends one request and returns its reply. A reload may wait behind others, so the read
/// timeout is generous.
pub fn request<R: DeserializeOwned>(socket: &Path, req: &Request) -> Result<R, ClientError> {
    request_with_progress(socket, req, |_| {})
}

/// Sends one request and returns its reply, waiting at most `timeout` for each line of it
/// (`haconn dump`: a daemon that hangs must not hang the dump).
pub fn request_within<R: DeserializeOwned>(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<R, ClientError> {
    exchange(socket, req, timeout, |_| {})
}

/// Sends one request; `progress` sees each progress line the daemon sends before the
/// response (a PDU test in serial mode takes minutes).
pub fn request_with_progress<R: DeserializeOwned>(
    socket: &Path,
    req: &Request,
    progress: impl FnMut(&str),
) -> Result<R, ClientError> {
    exchange(socket, req, Duration::from_secs(300), progress)
}

fn exchange<R: DeserializeOwned>(
    socket: &Path,
    req: &Request,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<R, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req).expect("a request serializes");
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reader = BufReader::new(&stream);
    let bad = |e: serde_json::Error| ClientError::BadReply(e.to_string());
    loop {
        let mut reply = String::new();
        if reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::BadReply(
                "connection closed before the answer".into(),
            ));
        }
        let v: Value = serde_json::from_str(&reply).map_err(bad)?;
        let envelope = Envelope::deserialize(&v).map_err(bad)?;
        match envelope {
            Envelope { ok: Some(true), .. } => return R::deserialize(&v).map_err(bad),
            Envelope {
                ok: Some(false),
                error: Some(ErrorBody { code, message }),
            } => return Err(ClientError::Refused { code, message }),
            Envelope { ok: None, .. } => {
                progress(&Progress::deserialize(&v).map_err(bad)?.progress)
            }
            Envelope { .. } => {
                return Err(ClientError::BadReply("an error without its body".into()));
            }
        }
    }
}
