//! Why a client operation failed.

use std::io;

/// Why a client operation failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket error, or no answer after the retransmissions.
    Io(io::Error),
    /// The server answered with an error response.
    Rejected(u16, String),
    /// The server's answer was malformed or lacked what it must carry.
    Protocol(&'static str),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Rejected(code, reason) => write!(f, "server answered {code} {reason}"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl ClientError {
    /// The error code, when the server rejected the request.
    #[must_use]
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Rejected(code, _) => Some(*code),
            _ => None,
        }
    }
}
