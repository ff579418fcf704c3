//! The human incident workflow, beside the reading-driven alert state: a bureau
//! acknowledges an incident, assigns it to a person, adds notes, marks it under
//! investigation and closes it with a reason. The alert state machine
//! ([`super::incident`]) stays driven by readings alone: a workflow action never opens,
//! escalates or clears an incident, and an incident the readings cleared can still be
//! worked on and closed.
//!
//! Rules (pure, checked before anything is stored):
//! - `assign` names a person, `note` carries text, `close` a reason; `acknowledge` and
//!   `investigate` may carry a comment. Text is at most [`MAX_TEXT`] characters, with no
//!   control characters except newlines and tabs.
//! - After `close`, only `note` is accepted.

use serde::Serialize;

/// Longest accepted text of one action, in characters.
pub const MAX_TEXT: usize = 2000;

/// One workflow action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Seen and taken on.
    Acknowledge,
    /// Given to a person (the text names them).
    Assign,
    /// A note (the text).
    Note,
    /// Under investigation.
    Investigate,
    /// Closed (the text is the reason).
    Close,
}

impl Action {
    /// Every action, in workflow order.
    pub const ALL: [Action; 5] = [
        Action::Acknowledge,
        Action::Assign,
        Action::Note,
        Action::Investigate,
        Action::Close,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Assign => "assign",
            Action::Note => "note",
            Action::Investigate => "investigate",
            Action::Close => "close",
        }
    }

    /// Parses the spelling of [`Action::as_str`].
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the action needs a non-empty text (person, note, reason).
    pub fn needs_text(self) -> bool {
        matches!(self, Action::Assign | Action::Note | Action::Close)
    }
}

/// Why an action is refused (the reason code the console shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `assign`, `note` and `close` need a text.
    #[error("missing_text")]
    MissingText,
    /// Longer than [`MAX_TEXT`] characters.
    #[error("text_too_long")]
    TextTooLong,
    /// A control character other than newline or tab.
    #[error("bad_text")]
    BadText,
    /// The incident is closed: only notes are accepted.
    #[error("closed")]
    Closed,
}

/// Where an incident stands in the workflow, from its actions in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The last of acknowledge / investigate / close, if any.
    pub stage: Option<Action>,
    /// The person of the last `assign`.
    pub assignee: Option<String>,
}

impl Status {
    /// The status after `actions` (action, text), oldest first.
    pub fn of<'a>(actions: impl IntoIterator<Item = (Action, &'a str)>) -> Status {
        let mut s = Status::default();
        for (a, text) in actions {
            match a {
                Action::Assign => s.assignee = Some(text.to_string()),
                Action::Note => {}
                other => s.stage = Some(other),
            }
        }
        s
    }

    /// Whether the incident is closed in the workflow.
    pub fn closed(&self) -> bool {
        self.stage == Some(Action::Close)
    }
}

/// Checks `action` with `text` (trimmed by the caller) against the current status.
pub fn check(status: &Status, action: Action, text: &str) -> Result<(), Refusal> {
    if status.closed() && action != Action::Note {
        return Err(Refusal::Closed);
    }
    if action.needs_text() && text.is_empty() {
        return Err(Refusal::MissingText);
    }
    if text.chars().count() > MAX_TEXT {
        return Err(Refusal::TextTooLong);
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Refusal::BadText);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_required_where_they_carry_meaning() {
        let s = Status::default();
        assert_eq!(check(&s, Action::Acknowledge, ""), Ok(()));
        assert_eq!(check(&s, Action::Close, ""), Err(Refusal::MissingText));
        assert_eq!(check(&s, Action::Assign, ""), Err(Refusal::MissingText));
        assert_eq!(check(&s, Action::Note, "a\u{7}"), Err(Refusal::BadText));
        assert_eq!(check(&s, Action::Note, "line\nnext"), Ok(()));
        let long = "镉".repeat(MAX_TEXT + 1);
        assert_eq!(check(&s, Action::Note, &long), Err(Refusal::TextTooLong));
    }

    #[test]
    fn a_closed_incident_takes_notes_only() {
        let s = Status::of([
            (Action::Acknowledge, ""),
            (Action::Assign, "王工"),
            (Action::Close, "remediated"),
        ]);
        assert!(s.closed());
        assert_eq!(s.assignee.as_deref(), Some("王工"));
        assert_eq!(check(&s, Action::Acknowledge, ""), Err(Refusal::Closed));
        assert_eq!(check(&s, Action::Note, "follow-up"), Ok(()));
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
