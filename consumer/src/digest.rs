//! Alert storms: when one destination would get more than `digest.afterAlerts` alerts within
//! `digest.windowSeconds`, the first ones go out as they are and the rest of the window becomes
//! one digest, sent when the window closes ([`crate::delivery::digests`] keeps the windows).
//!
//! A digest travels through delivery as an [`Alert`] whose [`Alert::digest`] is set, so it gets
//! the same queue, retries, `Retry-After` pauses, redelivery, parking and `replay` as an alert.
//! A digest too long for its destination is split into parts before it is queued ([`split`]);
//! each part is delivered (and retried, and parked) on its own, so a refused third part never
//! repeats the first two.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `Butler.qlikSenseCloud.consumer.digest`, or a machine destination's own `digest` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestSettings {
    /// Alerts a destination gets one by one within a window before the rest are folded.
    pub after_alerts: u32,
    /// How long a window lasts, from its first alert.
    pub window: std::time::Duration,
}

/// The longest error line a digest shows; a longer one is cut, visibly (`…`).
pub const ERROR_LINE_MAX_CHARS: usize = 300;
/// The longest app name a digest shows.
pub const APP_NAME_MAX_CHARS: usize = 200;

/// One failed reload as a digest lists it. Values are as the event and tenant API gave them;
/// each destination escapes them for its markup when it renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestEntry {
    pub event_id: String,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The app's name, or its id when the name is unknown.
    pub app_name: String,
    /// Link to the app (from the configuration: the tenant URL with the app id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_id: Option<String>,
    /// When the reload ended (or the event time), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The first line of the error message.
    pub error_line: String,
}

/// The first line of an error message that says something, cut to [`ERROR_LINE_MAX_CHARS`].
pub fn error_line(error: &str) -> String {
    let line = error
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no error message)");
    cut(line, ERROR_LINE_MAX_CHARS)
}

/// `text` cut to `max` characters, with `…` where it was cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// One digest message: a part of the alerts one destination got in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    /// The window's id, unique per destination (its start, Unix milliseconds).
    pub window: String,
    /// When the window opened and closed, RFC 3339.
    pub window_start: String,
    pub window_end: String,
    /// Alerts in the whole digest, all parts together.
    pub total: usize,
    /// This part's number, from 1, and how many parts the digest has.
    pub part: usize,
    pub parts: usize,
    pub entries: Vec<DigestEntry>,
}

impl Digest {
    /// The template context: the digest's own fields, `count` (entries in this part),
    /// `split` (whether there are several parts) and `alerts` (the entries).
    pub fn context(&self) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("window".into(), self.window.clone().into());
        context.insert("windowStart".into(), self.window_start.clone().into());
        context.insert("windowEnd".into(), self.window_end.clone().into());
        context.insert("total".into(), self.total.into());
        context.insert("count".into(), self.entries.len().into());
        context.insert("part".into(), self.part.into());
        context.insert("parts".into(), self.parts.into());
        context.insert("split".into(), (self.parts > 1).into());
        let tenants: std::collections::BTreeSet<&str> =
            self.entries.iter().map(|e| e.tenant_id.as_str()).collect();
        context.insert(
            "tenantIds".into(),
            tenants.into_iter().collect::<Vec<_>>().join(", ").into(),
        );
        context.insert(
            "alerts".into(),
            serde_json::to_value(&self.entries).unwrap_or_default(),
        );
        context
    }

    /// A short description for log lines: the window, the part and every alert's event and
    /// app id, quoted (`Debug`), so a line break in one cannot forge a log line.
    pub fn describe(&self) -> String {
        let alerts: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{:?}/{:?}", e.event_id, e.app_id.as_deref().unwrap_or("?")))
            .collect();
        format!(
            "digest {:?} part {}/{} ({} of {} alerts: {})",
            self.window,
            self.part,
            self.parts,
            self.entries.len(),
            self.total,
            alerts.join(", ")
        )
    }
}

/// Cuts a window's entries into as few parts as fit the destination, in order. `fits` says
/// whether a part fits (the destination renders it and checks its limits); a single entry
/// that does not fit alone still gets a part of its own, so the destination's refusal shows
/// (and parks it) instead of the entry being dropped.
pub fn split(
    window: &str,
    window_start: &str,
    window_end: &str,
    entries: Vec<DigestEntry>,
    fits: impl Fn(&Digest) -> bool,
) -> Vec<Digest> {
    let total = entries.len();
    let part_of = |entries: Vec<DigestEntry>, part: usize, parts: usize| Digest {
        window: window.to_owned(),
        window_start: window_start.to_owned(),
        window_end: window_end.to_owned(),
        total,
        part,
        parts,
        entries,
    };
    // Measured with the widest part numbers the digest could have, so the numbering written
    // afterwards never makes a part grow past the limit.
    let probe = |slice: &[DigestEntry]| fits(&part_of(slice.to_vec(), total.max(1), total.max(1)));
    let mut sizes = Vec::new();
    let mut rest = entries.as_slice();
    while !rest.is_empty() {
        // The longest prefix that fits: grow by doubling, then bisect. One entry always goes.
        let n = rest.len();
        let mut good = 1;
        let mut high = n + 1;
        while good < n {
            let next = (good * 2).min(n);
            if probe(&rest[..next]) {
                good = next;
            } else {
                high = next;
                break;
            }
        }
        while high - good > 1 {
            let mid = good + (high - good) / 2;
            if probe(&rest[..mid]) {
                good = mid;
            } else {
                high = mid;
            }
        }
        sizes.push(good);
        rest = &rest[good..];
    }
    let parts = sizes.len();
    let mut entries = entries.into_iter();
    sizes
        .into_iter()
        .enumerate()
        .map(|(index, size)| part_of(entries.by_ref().take(size).collect(), index + 1, parts))
        .collect()
}

/// The `eventType` of a digest in machine destinations' payloads.
pub const DIGEST_EVENT_TYPE: &str = "qscloud.consumer.digest";

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<DigestEntry> {
        (0..n)
            .map(|i| DigestEntry {
                event_id: format!("e{i}"),
                tenant_id: "t".into(),
                tenant_comment: None,
                app_id: Some(format!("a{i}")),
                app_name: format!("App {i}"),
                app_url: None,
                reload_id: None,
                time: None,
                error_line: "x".into(),
            })
            .collect()
    }

    #[test]
    fn split_gives_as_few_parts_as_fit_in_order() {
        for (n, max) in [(0, 5), (1, 5), (5, 5), (6, 5), (200, 48), (200, 7), (10, 1)] {
            let parts = split("w", "s", "e", entries(n), |d| d.entries.len() <= max);
            assert_eq!(parts.len(), n.div_ceil(max), "n={n} max={max}");
            let names: Vec<String> = parts
                .iter()
                .flat_map(|p| p.entries.iter().map(|e| e.event_id.clone()))
                .collect();
            let expected: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
            assert_eq!(names, expected);
            for (i, p) in parts.iter().enumerate() {
                assert_eq!((p.part, p.parts, p.total), (i + 1, parts.len(), n));
                assert!(p.entries.len() <= max);
            }
        }
    }

    #[test]
    fn an_entry_too_big_alone_still_gets_a_part() {
        let parts = split("w", "s", "e", entries(3), |_| false);
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn error_lines_are_the_first_line_cut_visibly() {
        assert_eq!(error_line("\n  \nFirst\nsecond"), "First");
        assert_eq!(error_line(""), "(no error message)");
        let long = error_line(&"é".repeat(1000));
        assert_eq!(long.chars().count(), ERROR_LINE_MAX_CHARS);
        assert!(long.ends_with('…'));
    }
}
