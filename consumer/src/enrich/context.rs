//! The alert context: the values Butler hands to its Handlebars templates for a failed Qlik
//! Cloud app reload, under Butler's field names and in Butler's shapes, so a Butler user's
//! Teams/Slack/email templates render unchanged.
//!
//! Field names and shapes follow Butler's `src/lib/qscloud/*_notification_qscloud.js` and
//! `api/appreloadinfo.js`: `executionDuration` is `{hours, minutes, seconds}`,
//! `executionStartTime` is `{startTimeUTC, startTimeLocal1..5}`, sizes are text with thousands
//! separators (Butler uses `toLocaleString()`), owner fields fall back to `Unknown` / empty.

use qlik_events::{Envelope, ReloadEvent};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::fetch::Enrichment;
use crate::config::{GenericUrl, TenantConfig};
use crate::script_log::{CHAT_SCRIPT_LOG_MAX_CHARS, group_thousands, script_log_parts};

/// `executionDuration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExecutionDuration {
    pub hours: u64,
    pub minutes: u64,
    pub seconds: u64,
}

impl ExecutionDuration {
    pub fn from_secs(total: u64) -> Self {
        Self {
            hours: total / 3600,
            minutes: (total % 3600) / 60,
            seconds: total % 60,
        }
    }
}

/// `executionStartTime`. Butler's "local" variants are in the Butler host's time zone; this
/// consumer renders them in UTC, so output does not depend on where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecutionStartTime {
    #[serde(rename = "startTimeUTC")]
    pub start_time_utc: String,
    #[serde(rename = "startTimeLocal1")]
    pub start_time_local1: String,
    #[serde(rename = "startTimeLocal2")]
    pub start_time_local2: String,
    #[serde(rename = "startTimeLocal3")]
    pub start_time_local3: String,
    #[serde(rename = "startTimeLocal4")]
    pub start_time_local4: String,
    #[serde(rename = "startTimeLocal5")]
    pub start_time_local5: String,
}

/// `executionStopTime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecutionStopTime {
    #[serde(rename = "stopTimeUTC")]
    pub stop_time_utc: String,
    #[serde(rename = "stopTimeLocal1")]
    pub stop_time_local1: String,
    #[serde(rename = "stopTimeLocal2")]
    pub stop_time_local2: String,
    #[serde(rename = "stopTimeLocal3")]
    pub stop_time_local3: String,
    #[serde(rename = "stopTimeLocal4")]
    pub stop_time_local4: String,
    #[serde(rename = "stopTimeLocal5")]
    pub stop_time_local5: String,
}

/// `executionCreationTime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecutionCreationTime {
    #[serde(rename = "creationTimeUTC")]
    pub creation_time_utc: String,
    #[serde(rename = "creationTimeLocal1")]
    pub creation_time_local1: String,
    #[serde(rename = "creationTimeLocal2")]
    pub creation_time_local2: String,
    #[serde(rename = "creationTimeLocal3")]
    pub creation_time_local3: String,
    #[serde(rename = "creationTimeLocal4")]
    pub creation_time_local4: String,
    #[serde(rename = "creationTimeLocal5")]
    pub creation_time_local5: String,
}

/// Everything a template can use. Serializes with Butler's field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertContext {
    pub tenant_id: String,
    pub tenant_comment: String,
    pub tenant_url: String,

    /// The user who triggered the reload (event `userid`).
    pub user_id: String,
    /// Butler fills this with the app owner's name; kept for template compatibility.
    pub user_name: String,

    pub app_id: String,
    pub app_name: String,
    pub app_description: String,
    /// `<tenantUrl>/sense/app/<appId>`, the id percent-encoded (it comes from the event).
    pub app_url: String,
    pub app_has_section_access: bool,
    pub app_is_published: bool,
    pub app_publish_time: String,
    pub app_thumbnail: String,
    pub app_tags: Vec<String>,
    pub app_file_size: String,
    pub space_id: String,

    /// What started the reload: `hub`, `chronos`, `external`, `automations`, …
    pub reload_trigger: String,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    /// The legacy envelope's `eventTypeVersion` (`1.0.0` for `com.qlik.v1.…`), filled for
    /// every envelope format as Butler's templates show it.
    pub event_type_version: String,
    pub event_time: String,
    /// `legacy`, `hybrid` or `cloudevents`.
    pub envelope_format: String,
    pub ended_with_memory_constraint: bool,
    pub is_direct_query_mode: bool,
    pub is_partial_reload: bool,
    pub is_session_app: bool,
    pub is_skip_store: bool,
    pub peak_memory_bytes: String,
    pub reload_id: String,
    pub row_limit: String,
    pub statements: Value,
    /// As the event sent it: `error` or `FAILED` / `EXCEEDED_LIMIT`.
    pub status: String,
    /// Reload duration in milliseconds as the app reload event reports it.
    pub usage_duration: Option<u64>,
    pub size_memory_bytes: String,

    pub error_code: String,
    pub error_message: String,
    /// The reload's short log from `/api/v1/reloads/{id}`.
    pub log_message: String,
    pub execution_duration: ExecutionDuration,
    pub execution_creation_time: ExecutionCreationTime,
    pub execution_start_time: ExecutionStartTime,
    pub execution_stop_time: ExecutionStopTime,
    pub execution_status_text: String,

    pub script_log_size: String,
    pub script_log_size_rows: String,
    pub script_log_size_characters: String,
    pub script_log_head: String,
    pub script_log_tail: String,
    pub script_log_head_count: usize,
    pub script_log_tail_count: usize,

    #[serde(rename = "qlikSenseQMC")]
    pub qlik_sense_qmc: String,
    pub qlik_sense_hub: String,
    pub generic_urls: Vec<GenericUrl>,

    pub app_owner_name: String,
    pub app_owner_user_id: String,
    pub app_owner_picture: String,
    pub app_owner_email: String,
    pub owner_id: String,

    /// What could not be fetched from the tenant API, e.g. `script log: HTTP 503 after 4
    /// attempt(s)`. Empty when everything arrived.
    pub missing: Vec<String>,
}

const TRUNCATED_MARK: &str = "----Script log truncated by Butler----";

impl AlertContext {
    /// `genericUrls` from the configuration (`Butler.genericUrls`).
    pub fn with_generic_urls(mut self, urls: &[GenericUrl]) -> Self {
        self.generic_urls = urls.to_vec();
        self
    }

    /// The context as a JSON object, for sinks that keep or send it as JSON.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, numbers and lists always serializes to an object.
            _ => serde_json::Map::new(),
        }
    }

    /// The context prepared the way Butler prepares it for Teams and Slack templates, which
    /// produce JSON: script logs cut to [`CHAT_SCRIPT_LOG_MAX_CHARS`] (head keeps its start,
    /// tail its end), then `scriptLogHead`, `scriptLogTail` and `logMessage` escaped for
    /// embedding inside a JSON string (`{{{scriptLogHead}}}` in a template stays valid JSON).
    pub fn for_json_template(&self) -> Self {
        let mut ctx = self.clone();
        let head_chars = ctx.script_log_head.chars().count();
        if head_chars > CHAT_SCRIPT_LOG_MAX_CHARS {
            let kept: String = ctx
                .script_log_head
                .chars()
                .take(CHAT_SCRIPT_LOG_MAX_CHARS)
                .collect();
            ctx.script_log_head = format!("{kept}\n{TRUNCATED_MARK}");
        }
        let tail_chars = ctx.script_log_tail.chars().count();
        if tail_chars > CHAT_SCRIPT_LOG_MAX_CHARS {
            let kept: String = ctx
                .script_log_tail
                .chars()
                .skip(tail_chars - CHAT_SCRIPT_LOG_MAX_CHARS)
                .collect();
            ctx.script_log_tail = format!("{TRUNCATED_MARK}\n{kept}");
        }
        ctx.script_log_head = json_escape(&ctx.script_log_head);
        ctx.script_log_tail = json_escape(&ctx.script_log_tail);
        ctx.log_message = json_escape(&ctx.log_message);
        ctx
    }
}

/// The inside of a JSON string literal.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.replace('\r', "")).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// An id as one URL path segment: everything but letters, digits, `-`, `_` and `~`
/// percent-encoded, so an id from an event can neither leave its segment (`/`, `..`) nor add a
/// query or fragment, nor carry markup into a link.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Luxon's formats as Butler uses them (en-US), in UTC:
/// `yyyy-LL-dd HH:mm:ss`, `DATETIME_SHORT_WITH_SECONDS`, `DATETIME_MED_WITH_SECONDS`,
/// `DATETIME_FULL_WITH_SECONDS` (twice, as in Butler).
fn local_formats(t: OffsetDateTime) -> [String; 5] {
    let t = t.to_offset(time::UtcOffset::UTC);
    let month_index = usize::from(u8::from(t.month())) - 1;
    let month = MONTHS[month_index];
    let (h12, ampm) = match t.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    let clock = format!("{h12}:{:02}:{:02} {ampm}", t.minute(), t.second());
    let full = format!("{month} {}, {} at {clock} UTC", t.day(), t.year());
    [
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        format!("{}/{}/{}, {clock}", u8::from(t.month()), t.day(), t.year()),
        format!("{} {}, {}, {clock}", &month[..3], t.day(), t.year()),
        full.clone(),
        full,
    ]
}

fn start_time(raw: Option<&str>) -> ExecutionStartTime {
    let Some(raw) = raw else {
        return ExecutionStartTime::default();
    };
    let [l1, l2, l3, l4, l5] = parse_time(raw).map(local_formats).unwrap_or_default();
    ExecutionStartTime {
        start_time_utc: raw.to_owned(),
        start_time_local1: l1,
        start_time_local2: l2,
        start_time_local3: l3,
        start_time_local4: l4,
        start_time_local5: l5,
    }
}

fn stop_time(raw: Option<&str>) -> ExecutionStopTime {
    let Some(raw) = raw else {
        return ExecutionStopTime::default();
    };
    let [l1, l2, l3, l4, l5] = parse_time(raw).map(local_formats).unwrap_or_default();
    ExecutionStopTime {
        stop_time_utc: raw.to_owned(),
        stop_time_local1: l1,
        stop_time_local2: l2,
        stop_time_local3: l3,
        stop_time_local4: l4,
        stop_time_local5: l5,
    }
}

fn creation_time(raw: Option<&str>) -> ExecutionCreationTime {
    let Some(raw) = raw else {
        return ExecutionCreationTime::default();
    };
    let [l1, l2, l3, l4, l5] = parse_time(raw).map(local_formats).unwrap_or_default();
    ExecutionCreationTime {
        creation_time_utc: raw.to_owned(),
        creation_time_local1: l1,
        creation_time_local2: l2,
        creation_time_local3: l3,
        creation_time_local4: l4,
        creation_time_local5: l5,
    }
}

fn data_bool(envelope: &Envelope, key: &str) -> bool {
    envelope
        .data
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn data_u64(envelope: &Envelope, key: &str) -> Option<u64> {
    envelope.data.get(key).and_then(Value::as_u64)
}

fn data_str(envelope: &Envelope, key: &str) -> Option<String> {
    envelope
        .data
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Reload duration: from the tenant's start/end times, else the event's, else the event's own
/// duration figure.
fn duration(start: Option<&str>, end: Option<&str>, event_ms: Option<u64>) -> ExecutionDuration {
    if let (Some(start), Some(end)) = (start.and_then(parse_time), end.and_then(parse_time)) {
        let secs = (end - start).whole_seconds();
        if secs >= 0 {
            return ExecutionDuration::from_secs(secs.unsigned_abs());
        }
    }
    ExecutionDuration::from_secs(event_ms.unwrap_or(0) / 1000)
}

/// Builds the template context for one destination (head/tail line counts are per destination
/// in Butler). Pure: everything comes from the arguments.
pub fn build_context(
    envelope: &Envelope,
    reload: &ReloadEvent,
    tenant: &TenantConfig,
    enrichment: &Enrichment,
    head_lines: usize,
    tail_lines: usize,
) -> AlertContext {
    let info = enrichment.reload.clone().unwrap_or_default();
    let app = enrichment.app.clone().unwrap_or_default();
    let owner = enrichment.owner.as_ref();
    let tenant_url = tenant.tenant_url_str();
    let app_id = reload
        .app_id
        .clone()
        .or_else(|| envelope.app_id())
        .or(info.app_id.clone())
        .unwrap_or_default();
    // The event's name first, as Butler does; the API's name covers events that carry none
    // (`com.qlik.v1.reload.finished`); the id is better than an empty name in a message.
    let app_name = reload
        .app_name
        .clone()
        .or(app.name.clone())
        .unwrap_or_else(|| app_id.clone());

    let start_raw = info.start_time.clone().or(reload.start_time.clone());
    let mut end_raw = info.end_time.clone().or(reload.end_time.clone());
    if end_raw.is_none()
        && let (Some(start), Some(ms)) = (
            start_raw.as_deref().and_then(parse_time),
            reload.duration_ms,
        )
    {
        // `com.qlik.v1.reload.finished` has a start time and a duration but no end time. Both
        // come from the event: a duration past the calendar's end leaves the end time unknown
        // rather than overflowing.
        let end = start.checked_add(time::Duration::milliseconds(
            i64::try_from(ms).unwrap_or(i64::MAX),
        ));
        end_raw = end.and_then(|end| end.format(&Rfc3339).ok());
    }

    let log = enrichment
        .script_log
        .as_deref()
        .map(|log| script_log_parts(log, head_lines, tail_lines));
    let (head, tail, rows, chars) = match &log {
        Some(p) => (p.head.clone(), p.tail.clone(), p.rows, p.characters),
        None => (String::new(), String::new(), 0, 0),
    };

    let owner_name = owner
        .and_then(|o| o.name.clone())
        .unwrap_or_else(|| "Unknown".to_owned());

    AlertContext {
        tenant_id: tenant.id.clone(),
        tenant_comment: tenant.comment.clone().unwrap_or_default(),
        tenant_url: tenant_url.clone(),
        user_id: envelope.user_id.clone().unwrap_or_default(),
        user_name: owner_name.clone(),
        app_url: if app_id.is_empty() {
            tenant_url
        } else {
            format!("{tenant_url}/sense/app/{}", path_segment(&app_id))
        },
        app_id,
        app_name,
        app_description: app.description.clone().unwrap_or_default(),
        app_has_section_access: app.has_section_access.unwrap_or(false),
        app_is_published: app.published.unwrap_or(false),
        app_publish_time: app.publish_time.clone().unwrap_or_default(),
        app_thumbnail: app.thumbnail.clone().unwrap_or_default(),
        app_tags: enrichment.app_tags().to_vec(),
        app_file_size: group_thousands(
            enrichment
                .app_item
                .as_ref()
                .and_then(|i| i.app_file_size)
                .unwrap_or(0),
        ),
        space_id: envelope
            .space_id
            .clone()
            .or(app.space_id.clone())
            .unwrap_or_default(),
        reload_trigger: info
            .reload_type
            .clone()
            .or_else(|| data_str(envelope, "type"))
            .unwrap_or_default(),
        source: envelope.source.clone().unwrap_or_default(),
        event_id: envelope.id.clone(),
        event_type: envelope.event_type.clone(),
        event_type_version: qlik_events::envelope::legacy_type_version(&envelope.event_type),
        event_time: envelope.time.clone().unwrap_or_default(),
        envelope_format: envelope.format.as_str().to_owned(),
        ended_with_memory_constraint: data_bool(envelope, "endedWithMemoryConstraint"),
        is_direct_query_mode: data_bool(envelope, "isDirectQueryMode"),
        is_partial_reload: data_bool(envelope, "isPartialReload")
            || data_bool(envelope, "partial")
            || info.partial.unwrap_or(false),
        is_session_app: data_bool(envelope, "isSessionApp"),
        is_skip_store: data_bool(envelope, "isSkipStore"),
        peak_memory_bytes: group_thousands(data_u64(envelope, "peakMemoryBytes").unwrap_or(0)),
        reload_id: reload
            .reload_id
            .clone()
            .or(info.id.clone())
            .unwrap_or_default(),
        row_limit: group_thousands(data_u64(envelope, "rowLimit").unwrap_or(0)),
        statements: envelope
            .data
            .get("statements")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
        status: reload.status.clone(),
        usage_duration: data_u64(envelope, "duration"),
        size_memory_bytes: group_thousands(
            envelope
                .data
                .get("size")
                .and_then(|s| s.get("memory"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        error_code: info
            .error_code
            .clone()
            .or(reload.error_code.clone())
            .unwrap_or_default(),
        error_message: info
            .error_message
            .clone()
            .or(reload.error_message.clone())
            .unwrap_or_default(),
        log_message: info.log.clone().unwrap_or_default(),
        execution_duration: duration(start_raw.as_deref(), end_raw.as_deref(), reload.duration_ms),
        execution_creation_time: creation_time(info.creation_time.as_deref()),
        execution_start_time: start_time(start_raw.as_deref()),
        execution_stop_time: stop_time(end_raw.as_deref()),
        execution_status_text: info.status.clone().unwrap_or_default(),
        script_log_size: group_thousands(rows as u64),
        script_log_size_rows: group_thousands(rows as u64),
        script_log_size_characters: group_thousands(chars as u64),
        script_log_head: head,
        script_log_tail: tail,
        script_log_head_count: head_lines,
        script_log_tail_count: tail_lines,
        qlik_sense_qmc: tenant.qmc_url.clone().unwrap_or_default(),
        qlik_sense_hub: tenant.hub_url.clone().unwrap_or_default(),
        generic_urls: Vec::new(),
        app_owner_name: owner_name,
        app_owner_user_id: owner.and_then(|o| o.id.clone()).unwrap_or_default(),
        app_owner_picture: owner.and_then(|o| o.picture.clone()).unwrap_or_default(),
        app_owner_email: owner.and_then(|o| o.email.clone()).unwrap_or_default(),
        owner_id: envelope
            .owner_id
            .clone()
            .or(app.owner_id.clone())
            .unwrap_or_default(),
        missing: enrichment.missing.iter().map(ToString::to_string).collect(),
    }
}
