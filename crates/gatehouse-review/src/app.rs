//! The review application's state and what each key does. Pure apart from reading the
//! recordings a reviewer opens: events in, state out; drawing is in `ui`, the terminal
//! loop in `run`.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use crate::actions::Actions;
use crate::catalog::{Catalog, SessionEntry};
use crate::filter::Filter;
use crate::follow::Tail;
use crate::index::{Results, SearchIndex};
use crate::player::Player;
use crate::sqllog::SqlLog;
use crate::views::{move_selection, open_view, player_key, sql_key};

pub struct PlayerView {
    pub entry: SessionEntry,
    pub player: Player,
    pub show_input: bool,
    /// A live session's recording, read again as it grows.
    pub tail: Option<Tail>,
}

pub struct SqlView {
    pub entry: SessionEntry,
    pub log: SqlLog,
    /// Index into `log.entries`.
    pub selected: usize,
    /// The selected statement's full text and parameters are shown.
    pub detail: bool,
    /// A live session's statement log, read again as it grows.
    pub tail: Option<Tail>,
}

pub struct SearchView {
    pub query: String,
    pub results: Results,
    pub selected: usize,
    pub took: Duration,
}

pub enum View {
    Player(Box<PlayerView>),
    Sql(Box<SqlView>),
    Search(SearchView),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    Search,
    Filter,
    /// The reason to end [`App::acting_on`]'s session, which its operator will see.
    KillReason,
}

/// An action waiting for the reviewer's `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Kill { entry: SessionEntry, reason: String },
    Lock { entry: SessionEntry },
}

pub struct Prompt {
    pub kind: PromptKind,
    pub text: String,
}

pub struct App {
    catalog: Box<dyn Catalog>,
    pub sessions: Vec<SessionEntry>,
    pub filter: Filter,
    pub filter_text: String,
    /// Index into the filtered list.
    pub selected: usize,
    /// Views opened over the list, innermost last.
    pub views: Vec<View>,
    pub prompt: Option<Prompt>,
    pub help: bool,
    /// A one-line notice at the bottom (errors, the marker jumped to).
    pub message: Option<String>,
    pub index: SearchIndex,
    /// Wall clock for "live" durations, Unix milliseconds (an input, for tests).
    pub now_millis: i64,
    pub quit: bool,
    /// `K`/`L`; `None` in a read-only review (the keys and their hints are gone).
    actions: Option<Box<dyn Actions>>,
    /// The session a `K` prompt is about.
    pub acting_on: Option<SessionEntry>,
    pub confirm: Option<Confirm>,
}

impl App {
    pub fn new(mut catalog: Box<dyn Catalog>, index: SearchIndex, now_millis: i64) -> App {
        let (sessions, message) = match catalog.sessions() {
            Ok(s) => (s, None),
            Err(e) => (vec![], Some(format!("cannot list sessions: {e:#}"))),
        };
        App {
            catalog,
            sessions,
            filter: Filter::default(),
            filter_text: String::new(),
            selected: 0,
            views: vec![],
            prompt: None,
            help: false,
            message,
            index,
            now_millis,
            quit: false,
            actions: None,
            acting_on: None,
            confirm: None,
        }
    }

    /// Lets the reviewer end sessions and lock operators.
    pub fn with_actions(mut self, actions: Box<dyn Actions>) -> App {
        self.actions = Some(actions);
        self
    }

    pub fn has_actions(&self) -> bool {
        self.actions.is_some()
    }

    /// The session `K`/`L` act on: the selected row, or the open recording's session.
    fn action_entry(&self) -> Option<SessionEntry> {
        match self.views.last() {
            None => self.selected_entry().cloned(),
            Some(View::Player(p)) => Some(p.entry.clone()),
            Some(View::Sql(s)) => Some(s.entry.clone()),
            Some(View::Search(_)) => None,
        }
    }

    fn start_action(&mut self, code: KeyCode) {
        let Some(entry) = self.action_entry() else {
            return;
        };
        if code == KeyCode::Char('K') && !entry.is_live() {
            self.message = Some(format!("session {} has already ended", entry.id));
            return;
        }
        if code == KeyCode::Char('K') {
            self.acting_on = Some(entry);
            self.prompt = Some(Prompt {
                kind: PromptKind::KillReason,
                text: String::new(),
            });
        } else {
            self.confirm = Some(Confirm::Lock { entry });
        }
    }

    fn confirm_key(&mut self, k: &KeyEvent) {
        let Some(confirm) = self.confirm.take() else {
            return;
        };
        if k.code != KeyCode::Char('y') && k.code != KeyCode::Char('Y') {
            self.message = Some("cancelled".into());
            return;
        }
        let Some(actions) = self.actions.as_mut() else {
            return;
        };
        self.message = Some(match confirm {
            Confirm::Kill { entry, reason } => match actions.kill(&entry.id, &reason) {
                Ok(()) => format!(
                    "session {} of {} will end within 2 seconds: {reason}",
                    entry.id, entry.operator
                ),
                Err(e) => format!("cannot end session {}: {e:#}", entry.id),
            },
            Confirm::Lock { entry } => match actions.lock(&entry.operator) {
                Ok(ended) => format!(
                    "operator {} locked; {} live session{} will end within 2 seconds",
                    entry.operator,
                    ended.len(),
                    if ended.len() == 1 { "" } else { "s" }
                ),
                Err(e) => format!("cannot lock operator {}: {e:#}", entry.operator),
            },
        });
    }

    /// Reloads the list (live sessions move on), keeping the selected session selected.
    pub fn refresh(&mut self, now_millis: i64) {
        self.now_millis = now_millis;
        let keep = self.selected_entry().map(|e| e.id.clone());
        match self.catalog.sessions() {
            Ok(s) => self.sessions = s,
            Err(e) => self.message = Some(format!("cannot list sessions: {e:#}")),
        }
        let found = keep.and_then(|id| self.visible().position(|e| e.id == id));
        if let Some(i) = found {
            self.selected = i;
        }
        self.clamp_selection();
    }

    pub fn set_filter(&mut self, text: &str) -> Result<(), String> {
        self.filter = Filter::parse(text)?;
        self.filter_text = text.trim().to_owned();
        self.selected = 0;
        Ok(())
    }

    pub fn visible(&self) -> impl Iterator<Item = &SessionEntry> {
        self.sessions.iter().filter(|s| self.filter.matches(s))
    }

    pub fn selected_entry(&self) -> Option<&SessionEntry> {
        self.visible().nth(self.selected)
    }

    fn clamp_selection(&mut self) {
        let n = self.visible().count();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    /// Advances a playing player by `elapsed` wall time, and reads what a live session's
    /// recording gained (a player at the end of a live recording follows it).
    pub fn tick(&mut self, elapsed: Duration) {
        match self.views.last_mut() {
            Some(View::Player(p)) => {
                let was_playing = p.player.playing;
                p.player.tick(elapsed);
                if let Some(tail) = &mut p.tail {
                    if was_playing && !p.player.playing {
                        p.player.follow(); // played up to now: keep up with it
                    }
                    if let Some(lines) = tail.poll(elapsed) {
                        p.player.extend(&lines);
                    }
                }
            }
            Some(View::Sql(s)) => {
                if let Some(lines) = s.tail.as_mut().and_then(|t| t.poll(elapsed)) {
                    let at_end = s.selected + 1 >= s.log.entries.len();
                    s.log.extend(&lines);
                    if at_end && !s.detail {
                        s.selected = s.log.entries.len().saturating_sub(1);
                    }
                }
            }
            _ => {}
        }
    }

    /// The open view follows a live session (the loop then wakes often enough for it).
    pub fn is_following(&self) -> bool {
        match self.views.last() {
            Some(View::Player(p)) => p.tail.is_some(),
            Some(View::Sql(s)) => s.tail.is_some(),
            _ => false,
        }
    }

    pub fn is_playing(&self) -> bool {
        matches!(self.views.last(), Some(View::Player(p)) if p.player.playing)
    }

    /// Opens a session's recording, at `at` if given.
    pub fn open(&mut self, entry: SessionEntry, at: Option<Duration>) {
        match open_view(entry, at) {
            Ok(v) => self.views.push(v),
            Err(e) => self.message = Some(e),
        }
    }

    pub fn search(&mut self, query: &str) {
        let started = Instant::now();
        let visible: Vec<SessionEntry> = self.visible().cloned().collect();
        let results = self.index.search(&visible, query);
        self.views.push(View::Search(SearchView {
            query: query.to_owned(),
            results,
            selected: 0,
            took: started.elapsed(),
        }));
    }

    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key(k),
            Event::Mouse(m) => self.mouse(m),
            _ => {}
        }
    }

    fn mouse(&mut self, m: &MouseEvent) {
        let code = match m.kind {
            MouseEventKind::ScrollDown => KeyCode::Down,
            MouseEventKind::ScrollUp => KeyCode::Up,
            _ => return,
        };
        if self.prompt.is_none() && !self.help {
            self.key(&KeyEvent::new(code, KeyModifiers::NONE));
        }
    }

    fn key(&mut self, k: &KeyEvent) {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.confirm.is_some() {
            self.confirm_key(k);
            return;
        }
        if self.prompt.is_some() {
            self.prompt_key(k);
            return;
        }
        if self.help {
            // any key closes the help
            self.help = false;
            return;
        }
        self.message = None;
        match k.code {
            KeyCode::Char('?') => {
                self.help = true;
                return;
            }
            KeyCode::Char('/') => {
                self.prompt = Some(Prompt {
                    kind: PromptKind::Search,
                    text: String::new(),
                });
                return;
            }
            KeyCode::Char('K' | 'L') if self.actions.is_some() => {
                self.start_action(k.code);
                return;
            }
            _ => {}
        }
        match self.views.last_mut() {
            None => self.list_key(k),
            Some(View::Player(p)) => {
                if !player_key(p, k, &mut self.message) {
                    self.views.pop();
                }
            }
            Some(View::Sql(s)) => {
                if !sql_key(s, k) {
                    self.views.pop();
                }
            }
            Some(View::Search(_)) => self.search_key(k),
        }
    }

    fn prompt_key(&mut self, k: &KeyEvent) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        match k.code {
            KeyCode::Esc => {
                self.prompt = None;
                self.acting_on = None;
            }
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            KeyCode::Char(c) => prompt.text.push(c),
            KeyCode::Enter => {
                let Some(Prompt { kind, text }) = self.prompt.take() else {
                    return;
                };
                match kind {
                    PromptKind::Search if text.trim().is_empty() => {}
                    PromptKind::Search => {
                        if matches!(self.views.last(), Some(View::Search(_))) {
                            self.views.pop();
                        }
                        self.search(&text);
                    }
                    PromptKind::Filter => {
                        if let Err(e) = self.set_filter(&text) {
                            self.message = Some(e);
                        }
                    }
                    PromptKind::KillReason => match self.acting_on.take() {
                        Some(_) if text.trim().is_empty() => {
                            self.message =
                                Some("not ended: give a reason (the operator sees it)".into());
                        }
                        Some(entry) => {
                            self.confirm = Some(Confirm::Kill {
                                entry,
                                reason: text.trim().to_owned(),
                            });
                        }
                        None => {}
                    },
                }
            }
            _ => {}
        }
    }

    fn list_key(&mut self, k: &KeyEvent) {
        let n = self.visible().count();
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter = Filter::default();
                self.filter_text.clear();
            }
            KeyCode::Esc => self.quit = true,
            code if move_selection(&mut self.selected, n, code) => {}
            KeyCode::Char('f') => {
                self.prompt = Some(Prompt {
                    kind: PromptKind::Filter,
                    text: self.filter_text.clone(),
                });
            }
            KeyCode::Char('r') => self.refresh(self.now_millis),
            KeyCode::Enter => {
                if let Some(e) = self.selected_entry().cloned() {
                    self.open(e, None);
                }
            }
            _ => {}
        }
    }

    fn search_key(&mut self, k: &KeyEvent) {
        let Some(View::Search(s)) = self.views.last_mut() else {
            return;
        };
        let n = s.results.hits.len();
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => {
                self.views.pop();
            }
            code if move_selection(&mut s.selected, n, code) => {}
            KeyCode::Enter => {
                let Some(hit) = s.results.hits.get(s.selected).cloned() else {
                    return;
                };
                match self.sessions.iter().find(|e| e.id == hit.session).cloned() {
                    Some(e) => self.open(e, Some(hit.at)),
                    None => self.message = Some(format!("session {} is gone", hit.session)),
                }
            }
            _ => {}
        }
    }
}
