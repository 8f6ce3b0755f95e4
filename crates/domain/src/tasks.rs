//! Tasks and categories: value types, the status rule for `completed_at`, and the list query
//! (filters, sort allow-list, cursor) parsed from raw query pairs with a precise error per
//! parameter.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CategoryId, Cursor, DomainError, FieldError, Limit, error::REPEATED};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Done,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 3] = [TaskStatus::Todo, TaskStatus::InProgress, TaskStatus::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::InProgress => "in_progress",
            Self::Done => "done",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// Stored as a small integer (1, 2, 3) so that sorting by priority is sorting by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Medium, Priority::High];

    pub fn rank(self) -> i16 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
        }
    }

    pub fn from_rank(rank: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.rank() == rank)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl FromStr for Priority {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// A value the database should never hold (its CHECK constraints admit only the known ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stored {kind} {value:?}")]
pub struct UnknownStored {
    pub kind: &'static str,
    pub value: String,
}

/// Decoding a stored status fails loudly on anything unknown (no silent default).
impl TryFrom<String> for TaskStatus {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map_err(|()| UnknownStored {
            kind: "task status",
            value: s,
        })
    }
}

/// Decoding a stored rank fails loudly on anything unknown (no silent default).
impl TryFrom<i16> for Priority {
    type Error = UnknownStored;
    fn try_from(rank: i16) -> Result<Self, Self::Error> {
        Self::from_rank(rank).ok_or_else(|| UnknownStored {
            kind: "priority rank",
            value: rank.to_string(),
        })
    }
}

/// `completed_at` after a status change: set when the task becomes done (kept if it already
/// was), cleared when it leaves done.
pub fn completed_at_after(
    new_status: TaskStatus,
    old_status: Option<TaskStatus>,
    old_completed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match (new_status, old_status) {
        (TaskStatus::Done, Some(TaskStatus::Done)) => old_completed_at.or(Some(now)),
        (TaskStatus::Done, _) => Some(now),
        _ => None,
    }
}

/// A task title: trimmed, 1–200 characters, no control characters.
pub fn parse_title(raw: &str) -> Result<String, DomainError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(DomainError::field("title", "must not be empty"));
    }
    if t.chars().count() > 200 {
        return Err(DomainError::field("title", "must be at most 200 characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(DomainError::field("title", "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// A description: at most 10,000 characters (newlines and tabs allowed, NUL not).
pub fn parse_description(raw: &str) -> Result<String, DomainError> {
    if raw.chars().count() > 10_000 {
        return Err(DomainError::field("description", "must be at most 10000 characters"));
    }
    if raw.contains('\0') {
        return Err(DomainError::field("description", "must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

/// The most categories one task can carry.
pub const MAX_TASK_CATEGORIES: usize = 50;

/// A task's category set (ownership is checked by the use case, against the database).
pub fn parse_category_ids(ids: Vec<Uuid>) -> Result<Vec<CategoryId>, DomainError> {
    if ids.len() > MAX_TASK_CATEGORIES {
        return Err(DomainError::field(
            "category_ids",
            format!("at most {MAX_TASK_CATEGORIES} categories"),
        ));
    }
    Ok(ids.into_iter().map(CategoryId::from).collect())
}

/// A change to a task (PATCH, see [`crate::input`]): `None` leaves a field unchanged,
/// `Some(None)` clears a nullable one; `category_ids` replaces the whole set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub status: Option<TaskStatus>,
    pub priority: Option<Priority>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub category_ids: Option<Vec<CategoryId>>,
}

/// A category name: trimmed, 1–50 characters, no control characters. Unique per user,
/// case-insensitively (enforced by the database).
pub fn parse_category_name(raw: &str) -> Result<String, DomainError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(DomainError::field("name", "must not be empty"));
    }
    if t.chars().count() > 50 {
        return Err(DomainError::field("name", "must be at most 50 characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(DomainError::field("name", "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// The sort allow-list. Every order is total: ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskSort {
    #[serde(rename = "created_at")]
    CreatedAsc,
    #[serde(rename = "-created_at")]
    CreatedDesc,
    /// Tasks without a due date come last.
    #[serde(rename = "due_at")]
    DueAsc,
    /// Tasks without a due date come last.
    #[serde(rename = "-due_at")]
    DueDesc,
    /// Low → high.
    #[serde(rename = "priority")]
    PriorityAsc,
    /// High → low.
    #[serde(rename = "-priority")]
    PriorityDesc,
}

impl TaskSort {
    pub const ALL: [TaskSort; 6] = [
        Self::CreatedAsc,
        Self::CreatedDesc,
        Self::DueAsc,
        Self::DueDesc,
        Self::PriorityAsc,
        Self::PriorityDesc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAsc => "created_at",
            Self::CreatedDesc => "-created_at",
            Self::DueAsc => "due_at",
            Self::DueDesc => "-due_at",
            Self::PriorityAsc => "priority",
            Self::PriorityDesc => "-priority",
        }
    }

    pub fn descending(self) -> bool {
        matches!(self, Self::CreatedDesc | Self::DueDesc | Self::PriorityDesc)
    }
}

impl fmt::Display for TaskSort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task cursor holds: the sort it belongs to and the last row's sort key and id. `t` is
/// the timestamp key (`created_at`, or `due_at` where `None` means "no due date", sorted last in
/// both directions); `p` the priority rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCursor {
    pub s: TaskSort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<i16>,
    pub id: crate::TaskId,
}

/// A parsed `GET /v1/tasks` query.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskListQuery {
    pub statuses: Vec<TaskStatus>,
    pub priorities: Vec<Priority>,
    pub category_id: Option<Uuid>,
    pub due_before: Option<DateTime<Utc>>,
    pub due_after: Option<DateTime<Utc>>,
    /// Lower-cased title substring.
    pub q: Option<String>,
    pub include_deleted: bool,
    pub sort: TaskSort,
    pub limit: Limit,
    pub after: Option<TaskCursor>,
}

fn many<T: FromStr>(name: &str, raw: &str, allowed: &str, out: &mut Vec<T>, errors: &mut Vec<FieldError>) {
    for part in raw.split(',') {
        match part.trim().parse::<T>() {
            Ok(v) => out.push(v),
            Err(_) => errors.push(FieldError::new(name, format!("{part:?} is not one of {allowed}"))),
        }
    }
}

fn time(name: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)) {
        Ok(t) if crate::time::check(name, t).is_err() => {
            errors.push(FieldError::new(name, "must be between the years 1 and 9999"));
            None
        }
        Ok(t) => Some(t),
        Err(_) => {
            errors.push(FieldError::new(
                name,
                "must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z",
            ));
            None
        }
    }
}

impl TaskListQuery {
    /// Parses raw query pairs. `status` and `priority` accept several values, repeated
    /// (`status=todo&status=done`) or comma-separated (`status=todo,done`); every other parameter
    /// takes one value, and repeating it is an error (never "the last one wins"). Unknown
    /// parameters, bad values, an unknown sort and a cursor that does not decode (or belongs to
    /// another sort) are all reported, each naming its parameter.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, DomainError> {
        let mut errors = Vec::new();
        let mut statuses = Vec::new();
        let mut priorities = Vec::new();
        let (mut category_id, mut due_before, mut due_after, mut q) = (None, None, None, None);
        let mut include_deleted = false;
        let mut sort = TaskSort::CreatedDesc;
        let mut limit = None;
        let mut cursor = None;
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if !matches!(key, "status" | "priority") {
                if seen.contains(&key) {
                    if !errors
                        .iter()
                        .any(|e: &FieldError| e.field == key && e.message == REPEATED)
                    {
                        errors.push(FieldError::new(key, REPEATED));
                    }
                    continue;
                }
                seen.push(key);
            }
            match key {
                "status" => many("status", value, "todo, in_progress, done", &mut statuses, &mut errors),
                "priority" => many("priority", value, "low, medium, high", &mut priorities, &mut errors),
                "category_id" => match Uuid::try_parse(value) {
                    Ok(id) => category_id = Some(id),
                    Err(_) => errors.push(FieldError::new("category_id", "must be a UUID")),
                },
                "due_before" => due_before = time("due_before", value, &mut errors),
                "due_after" => due_after = time("due_after", value, &mut errors),
                "q" => {
                    let t = value.trim();
                    if t.is_empty() || t.chars().count() > 100 {
                        errors.push(FieldError::new("q", "must be 1 to 100 characters"));
                    } else {
                        q = Some(t.to_lowercase());
                    }
                }
                "include_deleted" => match value {
                    "true" => include_deleted = true,
                    "false" => include_deleted = false,
                    _ => errors.push(FieldError::new("include_deleted", "must be true or false")),
                },
                "sort" => match TaskSort::ALL.into_iter().find(|s| s.as_str() == value) {
                    Some(s) => sort = s,
                    None => errors.push(FieldError::new(
                        "sort",
                        "must be one of created_at, -created_at, due_at, -due_at, priority, -priority",
                    )),
                },
                "limit" => match value.parse::<i64>() {
                    Ok(n) => limit = Some(n),
                    Err(_) => errors.push(FieldError::new("limit", "must be an integer between 1 and 100")),
                },
                "cursor" => cursor = Some(value.to_owned()),
                other => errors.push(FieldError::new(other, "is not a known parameter")),
            }
        }
        let limit = match Limit::parse(limit) {
            Ok(l) => l,
            Err(DomainError::Validation(e)) => {
                errors.extend(e);
                Limit::default()
            }
        };
        if let (Some(b), Some(a)) = (due_before, due_after)
            && a >= b
        {
            errors.push(FieldError::new("due_after", "must be before due_before"));
        }
        let after = match cursor.as_deref().map(Cursor::decode::<TaskCursor>) {
            None => None,
            Some(Ok(c)) if c.s == sort && key_matches(&c) => Some(c),
            Some(_) => {
                errors.push(FieldError::new("cursor", "is not a valid cursor for this sort"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        statuses.sort_by_key(|s| *s as u8);
        statuses.dedup();
        priorities.sort();
        priorities.dedup();
        Ok(Self {
            statuses,
            priorities,
            category_id,
            due_before,
            due_after,
            q,
            include_deleted,
            sort,
            limit,
            after,
        })
    }
}

impl TaskListQuery {
    /// One string per distinct query, for caching its page: two queries have the same key exactly
    /// when they select the same page (statuses and priorities are already sorted and deduplicated,
    /// `q` lower-cased; `q` comes last, so whatever it holds cannot make two keys collide).
    pub fn cache_key(&self) -> String {
        use fmt::Write as _;
        let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        let mut key = String::with_capacity(96);
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let priorities: Vec<i16> = self.priorities.iter().map(|p| p.rank()).collect();
        let _ = write!(
            key,
            "o={};l={};d={};s={};p={:?};c={};b={};a={}",
            self.sort,
            self.limit.get(),
            u8::from(self.include_deleted),
            statuses.join(","),
            priorities,
            self.category_id.map(|c| c.to_string()).unwrap_or_default(),
            time(self.due_before).unwrap_or_default(),
            time(self.due_after).unwrap_or_default(),
        );
        if let Some(c) = &self.after {
            let _ = write!(
                key,
                ";k={}/{}/{}",
                time(c.t).unwrap_or_default(),
                c.p.map(|p| p.to_string()).unwrap_or_default(),
                c.id
            );
        }
        if let Some(q) = &self.q {
            let _ = write!(key, ";q={q}");
        }
        key
    }
}

fn key_matches(c: &TaskCursor) -> bool {
    match c.s {
        TaskSort::CreatedAsc | TaskSort::CreatedDesc => c.t.is_some() && c.p.is_none(),
        TaskSort::DueAsc | TaskSort::DueDesc => c.p.is_none(),
        TaskSort::PriorityAsc | TaskSort::PriorityDesc => c.t.is_none() && matches!(c.p, Some(1..=3)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<TaskListQuery, DomainError> {
        let pairs: Vec<(&str, &str)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        TaskListQuery::parse(pairs)
    }

    #[test]
    fn the_cache_key_is_the_same_for_the_same_page_and_differs_for_any_other() {
        let key = |q: &str| parse(q).unwrap().cache_key();
        assert_eq!(key(""), key("sort=-created_at&limit=20"), "defaults spelled out");
        assert_eq!(
            key("status=done,todo&priority=high"),
            key("priority=high&status=todo&status=done&status=todo")
        );
        assert_eq!(
            key("q=Report"),
            key("q=%20report".replace("%20", " ").as_str()),
            "trimmed, lower-cased"
        );
        let cursor = |s: TaskSort, t: Option<&str>, p: Option<i16>| {
            let id = crate::TaskId::from_uuid(Uuid::from_u128(7));
            let t = t.map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc));
            Cursor::encode(&TaskCursor { s, t, p, id })
        };
        let variants = [
            String::new(),
            "sort=due_at".into(),
            "limit=21".into(),
            "include_deleted=true".into(),
            "status=todo".into(),
            "status=todo,done".into(),
            "priority=low".into(),
            format!("category_id={}", Uuid::from_u128(1)),
            "due_before=2026-01-01T00:00:00Z".into(),
            "due_after=2026-01-01T00:00:00Z".into(),
            "due_after=2026-01-01T00:00:00.000000001Z".into(),
            "q=report".into(),
            "q=report;k=x".into(),
            format!(
                "cursor={}",
                cursor(TaskSort::CreatedDesc, Some("2026-01-01T00:00:00Z"), None)
            ),
            format!(
                "cursor={}",
                cursor(TaskSort::CreatedDesc, Some("2026-01-01T00:00:01Z"), None)
            ),
            format!("sort=due_at&cursor={}", cursor(TaskSort::DueAsc, None, None)),
            format!(
                "sort=due_at&cursor={}",
                cursor(TaskSort::DueAsc, Some("2026-01-01T00:00:00Z"), None)
            ),
            format!("sort=priority&cursor={}", cursor(TaskSort::PriorityAsc, None, Some(1))),
            format!("sort=priority&cursor={}", cursor(TaskSort::PriorityAsc, None, Some(2))),
        ];
        let keys: Vec<String> = variants.iter().map(|q| key(q)).collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{:?} and {:?} select different pages", variants[i], variants[j]);
            }
        }
    }

    fn fields(r: Result<TaskListQuery, DomainError>) -> Vec<String> {
        match r {
            Err(DomainError::Validation(e)) => e.into_iter().map(|f| f.field).collect(),
            Ok(q) => panic!("expected errors, got {q:?}"),
        }
    }

    #[test]
    fn defaults() {
        let q = parse("").unwrap();
        assert_eq!(q.sort, TaskSort::CreatedDesc);
        assert_eq!(q.limit.get(), 20);
        assert!(!q.include_deleted && q.statuses.is_empty() && q.after.is_none());
    }

    #[test]
    fn multi_valued_filters() {
        let q = parse("status=todo,done&status=in_progress&priority=high&priority=high").unwrap();
        assert_eq!(q.statuses, [TaskStatus::Todo, TaskStatus::InProgress, TaskStatus::Done]);
        assert_eq!(q.priorities, [Priority::High]);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let f = fields(parse(
            "status=open&priority=urgent&category_id=x&due_before=tomorrow&include_deleted=yes&sort=title&limit=0&what=1&q=",
        ));
        for name in [
            "status",
            "priority",
            "category_id",
            "due_before",
            "include_deleted",
            "sort",
            "limit",
            "what",
            "q",
        ] {
            assert!(f.contains(&name.to_owned()), "{name} missing from {f:?}");
        }
        assert_eq!(
            fields(parse("due_after=2026-02-01T00:00:00Z&due_before=2026-01-01T00:00:00Z")),
            ["due_after"]
        );
    }

    #[test]
    fn a_single_valued_parameter_given_twice_is_named() {
        for name in [
            "sort",
            "limit",
            "cursor",
            "q",
            "category_id",
            "due_before",
            "due_after",
            "include_deleted",
        ] {
            let cursor = Cursor::encode(&TaskCursor {
                s: TaskSort::CreatedDesc,
                t: Some(Utc::now()),
                p: None,
                id: Uuid::nil().into(),
            });
            let value = match name {
                "sort" => "-created_at",
                "limit" => "5",
                "cursor" => cursor.as_str(),
                "q" => "milk",
                "category_id" => "0190a5f2-7c3e-7abc-8def-0123456789ab",
                "include_deleted" => "true",
                _ => "2026-01-01T00:00:00Z",
            };
            let r = parse(&format!("{name}={value}&{name}={value}&{name}={value}"));
            match r {
                Err(DomainError::Validation(e)) => {
                    assert_eq!(e, [FieldError::new(name, REPEATED)], "{name}");
                }
                Ok(q) => panic!("{name} repeated was accepted: {q:?}"),
            }
        }
        // Multi-valued filters are honoured, repeated or not.
        assert!(parse("status=todo&status=done&priority=low&priority=high").is_ok());
    }

    #[test]
    fn cursors_are_checked_against_the_sort() {
        let c = TaskCursor {
            s: TaskSort::DueAsc,
            t: None,
            p: None,
            id: Uuid::nil().into(),
        };
        let enc = Cursor::encode(&c);
        assert_eq!(parse(&format!("sort=due_at&cursor={enc}")).unwrap().after, Some(c));
        assert_eq!(fields(parse(&format!("sort=priority&cursor={enc}"))), ["cursor"]);
        assert_eq!(fields(parse("cursor=garbage")), ["cursor"]);
        let wrong_key = Cursor::encode(&TaskCursor {
            s: TaskSort::PriorityAsc,
            t: None,
            p: Some(9),
            id: Uuid::nil().into(),
        });
        assert_eq!(fields(parse(&format!("sort=priority&cursor={wrong_key}"))), ["cursor"]);
        let created_without_key = Cursor::encode(&TaskCursor {
            s: TaskSort::CreatedAsc,
            t: None,
            p: None,
            id: Uuid::nil().into(),
        });
        assert_eq!(
            fields(parse(&format!("sort=created_at&cursor={created_without_key}"))),
            ["cursor"]
        );
    }

    #[test]
    fn completed_at_follows_status() {
        let now = Utc::now();
        let earlier = now - chrono::Duration::hours(1);
        assert_eq!(
            completed_at_after(TaskStatus::Done, Some(TaskStatus::Todo), None, now),
            Some(now)
        );
        assert_eq!(
            completed_at_after(TaskStatus::Done, Some(TaskStatus::Done), Some(earlier), now),
            Some(earlier)
        );
        assert_eq!(
            completed_at_after(TaskStatus::Todo, Some(TaskStatus::Done), Some(earlier), now),
            None
        );
        assert_eq!(completed_at_after(TaskStatus::Done, None, None, now), Some(now));
        assert_eq!(completed_at_after(TaskStatus::InProgress, None, None, now), None);
    }

    #[test]
    fn text_rules() {
        assert_eq!(parse_title("  Buy milk ").unwrap(), "Buy milk");
        assert!(parse_title("").is_err() && parse_title(&"x".repeat(201)).is_err() && parse_title("a\u{0}b").is_err());
        assert!(parse_description(&"x".repeat(10_000)).is_ok() && parse_description(&"x".repeat(10_001)).is_err());
        assert!(parse_description("line\nbreak\ttab").is_ok() && parse_description("a\0b").is_err());
        assert!(parse_category_name(" Work ").is_ok() && parse_category_name(&"c".repeat(51)).is_err());
    }

    #[test]
    fn priority_ranks() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
        }
        assert!(Priority::Low < Priority::High);
        assert_eq!(Priority::from_rank(0), None);
    }
}
