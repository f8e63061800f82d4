//! The session's recording on the SSH front: created (asciicast, with the first channel's
//! pty, size and program in the header) before the first shell, exec or subsystem request
//! reaches the target; a recording that cannot be created refuses the session (the shared
//! rule, `gatehouse_session::recording_failed`).

use gatehouse_core::EndReason;
use gatehouse_session::GuardEvent;
use russh::ChannelId;

use crate::connection::{Connection, Target};

impl Connection {
    /// Opens the session's recording if it is not open yet. Fail closed: `Err` carries the
    /// message the operator sees, and the session must not go on. The files are created on
    /// a blocking thread (creating a file can take milliseconds on a full filesystem; the
    /// runtime's workers relay other sessions meanwhile).
    pub(crate) async fn ensure_recording(
        &mut self,
        channel: ChannelId,
        what: &str,
    ) -> Result<(), String> {
        if self.state.recorder.get().is_some() {
            return Ok(());
        }
        let (Some(e), Some(session)) = (&self.enforcement, &self.session) else {
            return Err("the session is not set up for recording".into());
        };
        let pty = self.pty_channels.contains(&channel);
        let (term, cols, rows) =
            self.pty_info
                .get(&channel)
                .cloned()
                .map_or((None, 80, 24), |(t, c, r)| {
                    let (c, r) = gatehouse_recorder::effective_size(c, r);
                    (Some(t), c, r)
                });
        let environment = match &self.target {
            Target::Allowed(a) => a.target.environment.clone(),
            _ => String::new(),
        };
        let started = std::time::SystemTime::now()
            .checked_sub(e.clock.opened().elapsed())
            .unwrap_or_else(std::time::SystemTime::now);
        let header = gatehouse_recorder::Header {
            width: cols,
            height: rows,
            timestamp: started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            term,
            title: format!("{} → {}", session.operator, session.target),
            env: vec![
                ("GATEHOUSE_SESSION".into(), session.id.clone()),
                ("GATEHOUSE_OPERATOR".into(), session.operator.clone()),
                ("GATEHOUSE_TARGET".into(), session.target.clone()),
                ("GATEHOUSE_ENVIRONMENT".into(), environment),
                ("GATEHOUSE_FIRST_CHANNEL".into(), what.to_owned()),
                (
                    gatehouse_recorder::PTY_KEY.into(),
                    if pty { "yes" } else { "no" }.into(),
                ),
            ],
        };
        let path = (self.broker.config.front.recordings_root).join(
            gatehouse_recorder::file::relative_path(&session.id, started),
        );
        let file =
            gatehouse_recorder::file::RecordingFile::create_at_blocking(path, header.to_line())
                .await;
        let store = self.broker.store();
        let file = match file {
            Ok(f) => f,
            Err(err) => {
                return Err(gatehouse_session::recording_failed(
                    store,
                    session,
                    &self.state.end,
                    &err,
                ));
            }
        };
        let path = file.path().to_owned();
        let events = e.events.clone();
        let recorder = gatehouse_recorder::spawn_recorder(file, e.clock.opened(), move |_why| {
            let _ = events.send(GuardEvent::Kill(EndReason::RecordingFailed));
        });
        gatehouse_session::recording_opened(store, session, &path, &recorder);
        let _ = self.state.recorder.set(recorder);
        Ok(())
    }
}
