//! The gate every operator action passes before it may reach a target, and the rule that
//! fixes what a channel's recording is. Pure: the fronts hold the state (an atomic in
//! `gatehouse-session`) and ask [`admit`]; nothing here knows a protocol's wire format.
//!
//! Two promises rest on these rules. *Locked means locked*: while the session is locked or
//! ending, no operator action reaches the target, whichever channel it comes on (a new
//! channel through an OpenSSH ControlMaster included). *Nothing unrecorded*: a channel's
//! recording mode is decided once, when the target accepts the channel's first
//! shell/exec/subsystem, and never changes after; bytes sent before that are not relayed.

/// Where a session stands, as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Operator actions flow to the target.
    Open,
    /// Locked for in-band reauthentication (including its grace): keystrokes answer the
    /// lock prompt, nothing reaches the target.
    Locked,
    /// An enforcement end, kill or shutdown is under way, or done: nothing reaches the
    /// target any more.
    Ending,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Locked => "locked",
            SessionState::Ending => "ending",
        }
    }
}

/// Something the operator does that would reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorAction {
    /// A new channel (SSH `channel-open session`).
    OpenChannel,
    /// A request that prepares a channel: pty, env.
    Prepare,
    /// The start of a channel's program: shell, exec, subsystem.
    Start,
    /// Bytes for the program (data, extended data; a SQL message).
    Input,
    /// A signal for the program.
    Signal,
    /// End of the operator's input.
    Eof,
    /// The terminal's new size.
    WindowChange,
}

impl OperatorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorAction::OpenChannel => "channel open",
            OperatorAction::Prepare => "channel setup request",
            OperatorAction::Start => "start request",
            OperatorAction::Input => "input",
            OperatorAction::Signal => "signal",
            OperatorAction::Eof => "eof",
            OperatorAction::WindowChange => "window change",
        }
    }
}

/// What becomes of an operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Forward it to the target.
    Forward,
    /// The session is locked and this is typed input: it answers the lock prompt and goes
    /// nowhere else.
    LockPrompt,
    /// Held back while locked and applied when the session unlocks (the last window size,
    /// an EOF): harmless on their own, and dropping them would leave the target's view of
    /// the terminal wrong after the unlock.
    HoldUntilUnlocked,
    /// Not forwarded; a request is answered with a failure, a channel open rejected.
    Refuse(Refusal),
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Locked,
    Ending,
    /// Input or a signal on a channel whose program has not been accepted by the target:
    /// the bytes would reach the program unrecorded.
    NotStarted,
    /// A second start request on a channel (RFC 4254 §6.5: only one succeeds per channel).
    AlreadyStarted,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Locked => "session locked",
            Refusal::Ending => "session ending",
            Refusal::NotStarted => "channel not started",
            Refusal::AlreadyStarted => "channel already started",
        }
    }
}

/// Whether the operator's `action`, on a channel whose start stands at `channel`, may
/// reach the target while the session is `state`. `channel` is `None` for actions that
/// concern no existing channel (opening one).
pub fn admit(
    state: SessionState,
    channel: Option<ChannelStart>,
    action: OperatorAction,
) -> Admission {
    use OperatorAction as A;
    match state {
        SessionState::Ending => return Admission::Refuse(Refusal::Ending),
        SessionState::Locked => {
            return match action {
                A::Input => Admission::LockPrompt,
                A::WindowChange | A::Eof => Admission::HoldUntilUnlocked,
                _ => Admission::Refuse(Refusal::Locked),
            };
        }
        SessionState::Open => {}
    }
    let start = channel.unwrap_or(ChannelStart::NotStarted);
    match action {
        A::OpenChannel | A::Prepare | A::WindowChange | A::Eof => Admission::Forward,
        A::Start => match start {
            ChannelStart::NotStarted => Admission::Forward,
            ChannelStart::Starting | ChannelStart::Started(_) => {
                Admission::Refuse(Refusal::AlreadyStarted)
            }
        },
        A::Input | A::Signal => match start {
            ChannelStart::Started(_) => Admission::Forward,
            ChannelStart::NotStarted | ChannelStart::Starting => {
                Admission::Refuse(Refusal::NotStarted)
            }
        },
    }
}

/// How a channel's traffic is kept for audit. Fixed once the target accepted the
/// channel's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingMode {
    /// Shell or exec: input and output bytes go to the recording.
    Terminal,
    /// The sftp subsystem: a transfer log (markers and audit events) instead of bytes.
    Sftp,
    /// Another subsystem that policy allows: its bytes go to the recording as they are.
    RawSubsystem,
}

impl RecordingMode {
    /// The mode for a start request: `shell`/`exec` are terminals, `sftp` gets the
    /// transfer log, any other subsystem is recorded raw (when policy allows it at all).
    pub fn for_subsystem(name: &str) -> RecordingMode {
        if name == "sftp" {
            RecordingMode::Sftp
        } else {
            RecordingMode::RawSubsystem
        }
    }
}

/// Where a channel's program stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelStart {
    NotStarted,
    /// A start request was sent to the target and awaits its answer.
    Starting,
    /// The target accepted the program; this is the channel's recording mode for good.
    Started(RecordingMode),
}

impl ChannelStart {
    pub fn mode(self) -> Option<RecordingMode> {
        match self {
            ChannelStart::Started(m) => Some(m),
            _ => None,
        }
    }

    /// The target answered the start request.
    pub fn answered(self, accepted: bool, mode: RecordingMode) -> ChannelStart {
        match (self, accepted) {
            (ChannelStart::Starting, true) => ChannelStart::Started(mode),
            (ChannelStart::Starting, false) => ChannelStart::NotStarted,
            // an answer to nothing changes nothing: a started channel keeps its mode
            (other, _) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OperatorAction as A;

    const ALL: [OperatorAction; 7] = [
        A::OpenChannel,
        A::Prepare,
        A::Start,
        A::Input,
        A::Signal,
        A::Eof,
        A::WindowChange,
    ];
    const STARTS: [Option<ChannelStart>; 6] = [
        None,
        Some(ChannelStart::NotStarted),
        Some(ChannelStart::Starting),
        Some(ChannelStart::Started(RecordingMode::Terminal)),
        Some(ChannelStart::Started(RecordingMode::Sftp)),
        Some(ChannelStart::Started(RecordingMode::RawSubsystem)),
    ];

    #[test]
    fn nothing_reaches_the_target_while_locked_or_ending() {
        for action in ALL {
            for start in STARTS {
                let ending = admit(SessionState::Ending, start, action);
                assert_eq!(ending, Admission::Refuse(Refusal::Ending), "{action:?}");
                let locked = admit(SessionState::Locked, start, action);
                assert_ne!(locked, Admission::Forward, "{action:?} {start:?}");
                let expected = match action {
                    A::Input => Admission::LockPrompt,
                    A::WindowChange | A::Eof => Admission::HoldUntilUnlocked,
                    _ => Admission::Refuse(Refusal::Locked),
                };
                assert_eq!(locked, expected, "{action:?} {start:?}");
            }
        }
    }

    #[test]
    fn input_and_signals_only_reach_a_started_program() {
        for action in [A::Input, A::Signal] {
            for start in [
                None,
                Some(ChannelStart::NotStarted),
                Some(ChannelStart::Starting),
            ] {
                assert_eq!(
                    admit(SessionState::Open, start, action),
                    Admission::Refuse(Refusal::NotStarted)
                );
            }
            assert_eq!(
                admit(
                    SessionState::Open,
                    Some(ChannelStart::Started(RecordingMode::Sftp)),
                    action
                ),
                Admission::Forward
            );
        }
    }

    #[test]
    fn a_channel_starts_once() {
        assert_eq!(
            admit(SessionState::Open, Some(ChannelStart::NotStarted), A::Start),
            Admission::Forward
        );
        for start in [
            ChannelStart::Starting,
            ChannelStart::Started(RecordingMode::Terminal),
        ] {
            assert_eq!(
                admit(SessionState::Open, Some(start), A::Start),
                Admission::Refuse(Refusal::AlreadyStarted)
            );
        }
    }

    #[test]
    fn setup_flows_before_the_start() {
        for action in [A::OpenChannel, A::Prepare, A::Eof, A::WindowChange] {
            assert_eq!(
                admit(SessionState::Open, Some(ChannelStart::NotStarted), action),
                Admission::Forward
            );
        }
    }

    #[test]
    fn the_mode_is_fixed_by_the_first_accepted_start() {
        let s = ChannelStart::Starting.answered(true, RecordingMode::Terminal);
        assert_eq!(s.mode(), Some(RecordingMode::Terminal));
        // a later answer (a stray request the target refused) cannot change it
        assert_eq!(s.answered(false, RecordingMode::Sftp), s);
        assert_eq!(s.answered(true, RecordingMode::Sftp), s);
        assert_eq!(
            ChannelStart::Starting.answered(false, RecordingMode::Terminal),
            ChannelStart::NotStarted
        );
        assert_eq!(RecordingMode::for_subsystem("sftp"), RecordingMode::Sftp);
        assert_eq!(
            RecordingMode::for_subsystem("netconf"),
            RecordingMode::RawSubsystem
        );
    }
}
