//! Exit codes (the table in `docs/cli.md`) and how an error becomes one sentence on stderr.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

use merpati_control::protocol::AppError;
use merpati_control::{ClientError, HomeError};

/// Why `merpati` stopped. Usage errors (2) are reported by clap itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// 1: anything not listed below.
    Other = 1,
    /// 3: no daemon listens on the home's control socket.
    DaemonNotRunning = 3,
    /// 4: the home has no identity yet (`merpati init`).
    NotInitialised = 4,
    /// 5: no contact has that name.
    UnknownContact = 5,
    /// 6: the daemon refused the invite.
    InvalidInvite = 6,
    /// 7: the text is larger than the daemon sends.
    MessageTooLarge = 7,
    /// 8: `send --wait` gave up before the status was reached.
    Timeout = 8,
    /// 9: the message failed.
    MessageFailed = 9,
    /// 10: the daemon refused a relay address (not a multiaddr, no `/p2p/<peer id>`, or a
    /// `p2p-circuit` address).
    InvalidRelayAddress = 10,
    /// 11: `relay remove` named a relay that is not in the list.
    UnknownRelay = 11,
    /// 12: the relay list is full.
    RelayListFull = 12,
    /// 13: `relay add` found no relay at the address (unreachable, or not a relay).
    RelayCheckFailed = 13,
    /// 14: no contact request has that id.
    UnknownRequest = 14,
    /// 15: the contact request was too old to open (it was deleted).
    RequestExpired = 15,
    /// 16: `contact unblock` named someone who is not blocked.
    NotBlocked = 16,
    /// 17: no message has that id.
    UnknownMessage = 17,
    /// 18: the file cannot be sent: too large for this version, or a name or type not allowed.
    InvalidFile = 18,
    /// 19: a backup could not be written or restored: a passphrase too short, one that does not
    /// open the backup, a file that is not a whole backup, a path that cannot be written.
    Backup = 19,
    /// 20: `restore` into a home that already holds an identity or a database.
    HomeNotEmpty = 20,
    /// 21: no group has that name or id, or several have that name.
    UnknownGroup = 21,
    /// 22: the group does not allow it: not a member, no role for it, a member already or not
    /// one, the group or node full.
    GroupRefused = 22,
}

/// An error found by the CLI itself, with the exit code it calls for.
#[derive(Debug)]
pub(crate) struct Failure {
    code: Code,
    message: String,
}

impl Failure {
    /// A failure with exit code `code` and a sentence for the user.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for `error`: the first cause in its chain that has one decides.
pub(crate) fn code_of(error: &anyhow::Error) -> Code {
    for cause in error.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.code;
        }
        if let Some(error) = cause.downcast_ref::<ClientError>() {
            return match error {
                ClientError::DaemonNotRunning { .. } => Code::DaemonNotRunning,
                ClientError::RequestTooLarge { .. } => Code::MessageTooLarge,
                ClientError::Remote { .. } => match error.app_error() {
                    Some(AppError::UnknownContact) => Code::UnknownContact,
                    Some(AppError::InvalidInvite) => Code::InvalidInvite,
                    Some(AppError::MessageTooLarge) => Code::MessageTooLarge,
                    Some(AppError::InvalidRelayAddress) => Code::InvalidRelayAddress,
                    Some(AppError::UnknownRelay) => Code::UnknownRelay,
                    Some(AppError::RelayListFull) => Code::RelayListFull,
                    Some(AppError::RelayCheckFailed) => Code::RelayCheckFailed,
                    Some(AppError::UnknownRequest) => Code::UnknownRequest,
                    Some(AppError::RequestExpired) => Code::RequestExpired,
                    Some(AppError::NotBlocked) => Code::NotBlocked,
                    Some(AppError::UnknownMessage) => Code::UnknownMessage,
                    Some(AppError::InvalidFile) => Code::InvalidFile,
                    Some(AppError::Backup) => Code::Backup,
                    Some(AppError::UnknownGroup) => Code::UnknownGroup,
                    Some(AppError::GroupRefused) => Code::GroupRefused,
                    _ => Code::Other,
                },
                _ => Code::Other,
            };
        }
        if let Some(HomeError::NotInitialised { .. }) = cause.downcast_ref::<HomeError>() {
            return Code::NotInitialised;
        }
    }
    Code::Other
}

/// Prints `error` as one line on stderr and returns its exit code. A closed stdout (as in
/// `merpati messages | head -1`) is not an error worth a message: the reader got what it wanted.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // `{:#}` joins the context and its causes with ": " on one line, never a debug dump.
    let _ = writeln!(io::stderr().lock(), "merpati: {error:#}");
    ExitCode::from(code_of(error) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn remote(code: i64) -> anyhow::Error {
        ClientError::Remote { code, message: "m".into(), data: None }.into()
    }

    #[test]
    fn codes() {
        assert_eq!(code_of(&remote(1)), Code::UnknownContact);
        assert_eq!(code_of(&remote(2)), Code::InvalidInvite);
        assert_eq!(code_of(&remote(3)), Code::MessageTooLarge);
        assert_eq!(code_of(&remote(4)), Code::Other);
        assert_eq!(code_of(&remote(8)), Code::InvalidRelayAddress);
        assert_eq!(code_of(&remote(9)), Code::UnknownRelay);
        assert_eq!(code_of(&remote(10)), Code::RelayListFull);
        assert_eq!(Code::InvalidRelayAddress as u8, 10);
        assert_eq!(Code::UnknownRelay as u8, 11);
        assert_eq!(Code::RelayListFull as u8, 12);
        assert_eq!(code_of(&remote(-32602)), Code::Other);
        let not_running = ClientError::DaemonNotRunning { socket: PathBuf::from("/h/control.sock") };
        assert_eq!(
            code_of(&anyhow::Error::from(not_running).context("while asking")),
            Code::DaemonNotRunning
        );
        let not_init = HomeError::NotInitialised { path: PathBuf::from("/h/identity") };
        assert_eq!(code_of(&not_init.into()), Code::NotInitialised);
        assert_eq!(code_of(&Failure::new(Code::Timeout, "t").into()), Code::Timeout);
        assert_eq!(code_of(&anyhow::anyhow!("x")), Code::Other);
    }
}
