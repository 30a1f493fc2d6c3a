use std::fmt;
use std::time::Duration;

/// Everything that can go wrong driving a VM. Messages name what was being done.
#[derive(Debug)]
pub enum Error {
    /// A wait ran past its deadline.
    Timeout {
        what: String,
        after: Duration,
    },
    /// The guest answered `[id, "error", "Exc: msg"]`.
    Remote {
        request: String,
        message: String,
    },
    /// A command run through the remote shell exited non-zero where success was required.
    Command {
        cmd: String,
        rc: i64,
        stdout: String,
        stderr: String,
    },
    /// The remote shell or QMP said something the protocol does not allow, or went away.
    Protocol(String),
    /// QEMU could not be started or died.
    Qemu(String),
    /// Building or finding the image failed.
    Image(String),
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { what, after } => write!(f, "timed out after {:.1} s: {what}", after.as_secs_f64()),
            Error::Remote { request, message } => write!(f, "the guest refused {request}: {message}"),
            Error::Command { cmd, rc, stdout, stderr } => {
                write!(f, "`{cmd}` exited {rc}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
            }
            Error::Protocol(m) => write!(f, "protocol: {m}"),
            Error::Qemu(m) => write!(f, "qemu: {m}"),
            Error::Image(m) => write!(f, "image: {m}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}
