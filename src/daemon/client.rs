//! A blocking client of the control socket, for the CLI.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

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

/// Sends one request and returns the `ok` response. A reload may wait behind others, so
/// the read timeout is generous.
pub fn request(socket: &Path, req: Value) -> Result<Value, ClientError> {
    request_with_progress(socket, req, |_| {})
}

/// Sends one request; `progress` sees each progress line the daemon sends before the
/// response (a PDU test in serial mode takes minutes).
pub fn request_with_progress(
    socket: &Path,
    mut req: Value,
    mut progress: impl FnMut(&str),
) -> Result<Value, ClientError> {
    req["v"] = super::protocol::VERSION.into();
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(&req).expect("json serializes");
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reader = BufReader::new(&stream);
    let v = loop {
        let mut reply = String::new();
        if reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::BadReply(
                "connection closed before the answer".into(),
            ));
        }
        let v: Value =
            serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
        match v.get("progress").and_then(Value::as_str) {
            Some(line) if v.get("ok").is_none() => progress(line),
            _ => break v,
        }
    };
    if v["ok"] == Value::Bool(true) {
        return Ok(v);
    }
    Err(ClientError::Refused {
        code: v["error"]["code"].as_str().unwrap_or("?").to_string(),
        message: v["error"]["message"].as_str().unwrap_or("?").to_string(),
    })
}
