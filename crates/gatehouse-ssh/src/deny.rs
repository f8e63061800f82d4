//! Refusing an operator on a session channel: the operator's `ssh` prints Gatehouse's reason
//! on stderr and exits with status 1. Used for access denials and for targets that cannot
//! be reached, so that an operator always learns why (an SSH auth failure could not say).

use russh::ChannelId;
use russh::server::Session;

/// Exit status an operator's `ssh` reports when Gatehouse refused the session.
pub(crate) const REFUSED_EXIT_STATUS: u32 = 1;

/// Answers the pending shell/exec/subsystem request, writes `gatehouse: MESSAGE` to the
/// operator's stderr and closes the channel.
pub(crate) fn refuse_on_channel(
    session: &mut Session,
    channel: ChannelId,
    message: &str,
) -> Result<(), russh::Error> {
    session.channel_success(channel)?;
    session.extended_data(channel, 1, format!("gatehouse: {message}\r\n"))?;
    session.exit_status_request(channel, REFUSED_EXIT_STATUS)?;
    session.eof(channel)?;
    session.close(channel)
}

/// A one-line notice on the operator's stderr of a live channel.
pub(crate) fn notice(
    session: &mut Session,
    channel: ChannelId,
    message: &str,
) -> Result<(), russh::Error> {
    session.extended_data(channel, 1, format!("\r\n[gatehouse] {message}\r\n"))
}
