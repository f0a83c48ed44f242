//! The Qlik Cloud webhook envelope in its three forms, normalized into one [`Envelope`].
//!
//! - legacy: `cloudEventsVersion: "0.1"`, `eventId`, `eventTime`, `eventType`, `extensions{…}`
//!   (what Qlik sent until late 2025, and what Butler 16 reads);
//! - hybrid: both field sets in one body (2025-11-03 to 2026-10-06);
//! - CloudEvents 1.0: `specversion`, `id`, `time`, `type`, `tenantid`, `toplevelresourceid`, … .

use serde_json::{Map, Value};

pub const APP_RELOAD_FINISHED: &str = "com.qlik.v1.app.reload.finished";
pub const RELOAD_FINISHED: &str = "com.qlik.v1.reload.finished";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeFormat {
    Legacy,
    Hybrid,
    #[serde(rename = "cloudevents")]
    CloudEvents,
}

impl EnvelopeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Hybrid => "hybrid",
            Self::CloudEvents => "cloudevents",
        }
    }
}

/// Why a body is not a Qlik event. Safe to log: names fields, never echoes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object")]
    NotObject,
    #[error(
        "body has neither CloudEvents (specversion) nor legacy (cloudEventsVersion/eventType) fields"
    )]
    Unrecognized,
    #[error("{format} envelope lacks a non-empty string `{field}`")]
    MissingField {
        format: &'static str,
        field: &'static str,
    },
}

/// A webhook body in normalized form. Fields are taken from the CloudEvents 1.0 names first and
/// from the legacy names when those are absent, so a hybrid body reads like either.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub format: EnvelopeFormat,
    pub id: String,
    pub event_type: String,
    pub time: Option<String>,
    pub source: Option<String>,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub owner_id: Option<String>,
    pub space_id: Option<String>,
    pub top_level_resource_id: Option<String>,
    pub data: Value,
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Envelope {
    /// Parses a raw webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        match value {
            Value::Object(obj) => Self::from_object(obj),
            _ => Err(EnvelopeError::NotObject),
        }
    }

    pub fn from_object(mut obj: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let cloudevents = obj.get("specversion").is_some_and(Value::is_string);
        let legacy = obj.contains_key("cloudEventsVersion") || obj.contains_key("eventType");
        let format = match (cloudevents, legacy) {
            (true, true) => EnvelopeFormat::Hybrid,
            (true, false) => EnvelopeFormat::CloudEvents,
            (false, true) => EnvelopeFormat::Legacy,
            (false, false) => return Err(EnvelopeError::Unrecognized),
        };
        let extensions = obj
            .get("extensions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // CloudEvents name first, legacy name second: a hybrid body carries both with equal values.
        let pick = |ce: &str, legacy_top: Option<&str>, legacy_ext: Option<&str>| {
            str_field(&obj, ce)
                .or_else(|| legacy_top.and_then(|k| str_field(&obj, k)))
                .or_else(|| legacy_ext.and_then(|k| str_field(&extensions, k)))
        };
        let required = |value: Option<String>, field: &'static str| {
            value.ok_or(EnvelopeError::MissingField {
                format: format.as_str(),
                field,
            })
        };
        let (id_name, type_name, tenant_name) = match format {
            EnvelopeFormat::Legacy => ("eventId", "eventType", "extensions.tenantId"),
            _ => ("id", "type", "tenantid"),
        };
        let id = required(pick("id", Some("eventId"), None), id_name)?;
        let event_type = required(pick("type", Some("eventType"), None), type_name)?;
        let tenant_id = required(pick("tenantid", None, Some("tenantId")), tenant_name)?;
        let envelope = Envelope {
            format,
            id,
            event_type,
            time: pick("time", Some("eventTime"), None),
            source: pick("source", None, None),
            tenant_id,
            user_id: pick("userid", None, Some("userId")),
            owner_id: pick("ownerid", None, Some("ownerId")),
            space_id: pick("spaceid", None, Some("spaceId")),
            top_level_resource_id: pick("toplevelresourceid", None, Some("topLevelResourceId")),
            data: obj.remove("data").unwrap_or(Value::Null),
        };
        Ok(envelope)
    }

    /// The event time as a timestamp, when the body has one in RFC 3339.
    pub fn timestamp(&self) -> Option<time::OffsetDateTime> {
        let time = self.time.as_deref()?;
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()
    }

    pub fn is_app_reload(&self) -> bool {
        self.event_type == APP_RELOAD_FINISHED
    }

    fn data_str(&self, key: &str) -> Option<String> {
        self.data.as_object().and_then(|d| str_field(d, key))
    }

    /// The app the event is about: `data.appId` for reload events, else the top-level resource.
    pub fn app_id(&self) -> Option<String> {
        match self.event_type.as_str() {
            RELOAD_FINISHED => self
                .data_str("appId")
                .or_else(|| self.top_level_resource_id.clone()),
            _ => self.top_level_resource_id.clone(),
        }
    }

    /// The status the event reports (`data.status`), when it has one.
    pub fn status(&self) -> Option<String> {
        self.data_str("status")
    }

    /// The reload outcome, for the two reload event types; `None` for any other event.
    pub fn reload(&self) -> Option<ReloadEvent> {
        let data = self.data.as_object().cloned().unwrap_or_default();
        let num = |key: &str| data.get(key).and_then(Value::as_f64);
        match self.event_type.as_str() {
            APP_RELOAD_FINISHED => {
                let status = self.data_str("status").unwrap_or_default();
                let errors: Vec<&Map<String, Value>> = data
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_object).collect())
                    .unwrap_or_default();
                let messages: Vec<String> = errors
                    .iter()
                    .filter_map(|e| str_field(e, "message"))
                    .collect();
                Some(ReloadEvent {
                    kind: ReloadEventKind::AppReloadFinished,
                    app_id: self.app_id(),
                    app_name: self.data_str("name"),
                    reload_id: self.data_str("reloadId"),
                    failed: status.eq_ignore_ascii_case("error"),
                    status,
                    error_code: errors.iter().find_map(|e| str_field(e, "errorCode")),
                    error_message: (!messages.is_empty()).then(|| messages.join("; ")),
                    duration_ms: num("duration").map(|d| d.max(0.0) as u64),
                    start_time: self.data_str("startTime"),
                    end_time: self.data_str("endTime"),
                })
            }
            RELOAD_FINISHED => {
                let status = self.data_str("status").unwrap_or_default();
                Some(ReloadEvent {
                    kind: ReloadEventKind::ReloadFinished,
                    app_id: self.app_id(),
                    app_name: None,
                    reload_id: self.data_str("id"),
                    failed: matches!(
                        status.to_ascii_uppercase().as_str(),
                        "FAILED" | "EXCEEDED_LIMIT"
                    ),
                    status,
                    error_code: self.data_str("errorCode"),
                    error_message: self.data_str("errorMessage"),
                    duration_ms: num("durationSeconds").map(|s| (s.max(0.0) * 1000.0) as u64),
                    start_time: self.data_str("startTime"),
                    end_time: self.data_str("endTime"),
                })
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadEventKind {
    /// `com.qlik.v1.app.reload.finished` (status `ok` / `error`).
    AppReloadFinished,
    /// `com.qlik.v1.reload.finished` (status SUCCEEDED / FAILED / CANCELED / EXCEEDED_LIMIT).
    ReloadFinished,
}

/// What a reload event says about the reload, from either event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    pub kind: ReloadEventKind,
    pub app_id: Option<String>,
    pub app_name: Option<String>,
    pub reload_id: Option<String>,
    /// As sent: `ok`/`error` or `SUCCEEDED`/`FAILED`/`CANCELED`/`EXCEEDED_LIMIT`.
    pub status: String,
    /// `error`, `FAILED` or `EXCEEDED_LIMIT`. A cancelled reload is not a failure.
    pub failed: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub duration_ms: Option<u64>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

/// Adds the legacy fields that Butler 16 reads (`eventId`, `eventTime`, `eventType`,
/// `cloudEventsVersion`, `extensions.{tenantId,userId,ownerId,topLevelResourceId,spaceId}`) where
/// the body lacks them, so an unmodified Butler keeps working against a current tenant. Fields
/// already present are left untouched; a body that already has them all comes back unchanged.
pub fn with_legacy_fields(body: &[u8], envelope: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(EnvelopeError::NotObject),
        Err(e) => return Err(EnvelopeError::NotJson(e.to_string())),
    };
    let mut changed = false;
    let mut add = |map: &mut Map<String, Value>, key: &str, value: Option<&String>| {
        if let Some(value) = value
            && !map.contains_key(key)
        {
            map.insert(key.to_owned(), Value::String(value.clone()));
            changed = true;
        }
    };
    let legacy_version = "0.1".to_owned();
    add(&mut obj, "cloudEventsVersion", Some(&legacy_version));
    add(&mut obj, "eventId", Some(&envelope.id));
    add(&mut obj, "eventTime", envelope.time.as_ref());
    add(&mut obj, "eventType", Some(&envelope.event_type));
    // Butler's templates show these two; the legacy shape always carried them.
    add(
        &mut obj,
        "eventTypeVersion",
        Some(&legacy_type_version(&envelope.event_type)),
    );
    let content_type = match obj.get("datacontenttype") {
        Some(Value::String(ct)) => ct.clone(),
        _ => "application/json".to_owned(),
    };
    add(&mut obj, "contentType", Some(&content_type));
    let mut extensions = match obj.remove("extensions") {
        Some(Value::Object(ext)) => ext,
        _ => Map::new(),
    };
    add(&mut extensions, "tenantId", Some(&envelope.tenant_id));
    add(&mut extensions, "userId", envelope.user_id.as_ref());
    add(&mut extensions, "ownerId", envelope.owner_id.as_ref());
    add(
        &mut extensions,
        "topLevelResourceId",
        envelope.top_level_resource_id.as_ref(),
    );
    add(&mut extensions, "spaceId", envelope.space_id.as_ref());
    obj.insert("extensions".to_owned(), Value::Object(extensions));
    if !changed {
        return Ok(body.to_vec());
    }
    serde_json::to_vec(&Value::Object(obj)).map_err(|e| EnvelopeError::NotJson(e.to_string()))
}

/// The legacy `eventTypeVersion` for a type: Qlik wrote `1.0.0` for `com.qlik.v1.…` types, so
/// the major version is the type's `vN` segment.
pub fn legacy_type_version(event_type: &str) -> String {
    let major = event_type
        .split('.')
        .find_map(|segment| {
            let digits = segment.strip_prefix('v')?;
            (!digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then_some(digits)
        })
        .unwrap_or("1");
    format!("{major}.0.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = include_str!("../../testdata/qlik-samples/app-reload-failed.legacy.json");
    const CLOUDEVENTS: &str =
        include_str!("../../testdata/qlik-samples/app-reload-failed.cloudevents.json");
    const RELOAD: &str =
        include_str!("../../testdata/qlik-samples/reload-finished-failed.cloudevents.json");
    const TENANT: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
    const APP: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

    /// Qlik's hybrid body: the CloudEvents sample with the legacy sample's fields merged in.
    pub(crate) fn hybrid() -> String {
        let mut ce: Map<String, Value> = serde_json::from_str(CLOUDEVENTS).unwrap();
        let legacy: Map<String, Value> = serde_json::from_str(LEGACY).unwrap();
        for (k, v) in legacy {
            ce.entry(k).or_insert(v);
        }
        ce.insert("eventId".into(), ce["id"].clone());
        ce.insert("eventTime".into(), ce["time"].clone());
        serde_json::to_string(&ce).unwrap()
    }

    #[test]
    fn legacy_envelope_normalizes() {
        let env = Envelope::parse(LEGACY.as_bytes()).unwrap();
        assert_eq!(env.format, EnvelopeFormat::Legacy);
        assert_eq!(env.id, "6f3e2b9a-1c4d-4e8f-9a0b-2c3d4e5f6a7b");
        assert_eq!(env.event_type, APP_RELOAD_FINISHED);
        assert_eq!(env.tenant_id, TENANT);
        assert_eq!(env.top_level_resource_id.as_deref(), Some(APP));
        assert_eq!(env.space_id.as_deref(), Some("64db65d5970c28d340790f5c"));
        assert_eq!(env.time.as_deref(), Some("2026-09-14T11:31:39Z"));
        let reload = env.reload().unwrap();
        assert!(reload.failed);
        assert_eq!(
            reload.reload_id.as_deref(),
            Some("66e5727b9f3c8a0013a4b5c6")
        );
        assert_eq!(reload.error_code.as_deref(), Some("ScriptError"));
        assert_eq!(
            reload.error_message.as_deref(),
            Some("Field 'Amount' not found")
        );
        assert_eq!(reload.duration_ms, Some(4120));
        assert_eq!(reload.app_name.as_deref(), Some("Sales dashboard"));
    }

    #[test]
    fn cloudevents_envelope_normalizes() {
        let env = Envelope::parse(CLOUDEVENTS.as_bytes()).unwrap();
        assert_eq!(env.format, EnvelopeFormat::CloudEvents);
        assert_eq!(env.id, "0b7a6c55-8d2e-4f31-a6b4-3e9c1d2f7a80");
        assert_eq!(env.tenant_id, TENANT);
        assert_eq!(env.app_id().as_deref(), Some(APP));
        assert_eq!(env.source.as_deref(), Some("com.qlik/engine"));
        assert!(env.timestamp().is_some());
        let reload = env.reload().unwrap();
        assert_eq!(reload.kind, ReloadEventKind::AppReloadFinished);
        assert!(reload.failed);
        assert_eq!(reload.status, "error");
    }

    #[test]
    fn hybrid_envelope_normalizes_like_cloudevents() {
        let env = Envelope::parse(hybrid().as_bytes()).unwrap();
        assert_eq!(env.format, EnvelopeFormat::Hybrid);
        let ce = Envelope::parse(CLOUDEVENTS.as_bytes()).unwrap();
        assert_eq!(
            Envelope {
                format: EnvelopeFormat::CloudEvents,
                ..env
            },
            ce
        );
    }

    #[test]
    fn reload_finished_event_reads_its_own_fields() {
        let env = Envelope::parse(RELOAD.as_bytes()).unwrap();
        let reload = env.reload().unwrap();
        assert_eq!(reload.kind, ReloadEventKind::ReloadFinished);
        assert_eq!(
            reload.reload_id.as_deref(),
            Some("674ab6e2c1d0f80012e3f4a5")
        );
        assert_eq!(reload.app_id.as_deref(), Some(APP));
        assert!(reload.failed);
        assert_eq!(reload.error_code.as_deref(), Some("RELOADS-007"));
        assert_eq!(reload.duration_ms, Some(13_000));
    }

    #[test]
    fn reload_statuses_that_are_failures() {
        for (status, failed) in [
            ("FAILED", true),
            ("EXCEEDED_LIMIT", true),
            ("CANCELED", false),
            ("SUCCEEDED", false),
        ] {
            let body = RELOAD.replace("\"FAILED\"", &format!("\"{status}\""));
            let reload = Envelope::parse(body.as_bytes()).unwrap().reload().unwrap();
            assert_eq!(reload.failed, failed, "{status}");
        }
        let ok = CLOUDEVENTS.replace("\"status\":\"error\"", "\"status\":\"ok\"");
        assert!(
            !Envelope::parse(ok.as_bytes())
                .unwrap()
                .reload()
                .unwrap()
                .failed
        );
    }

    #[test]
    fn other_event_types_parse_without_a_reload() {
        let body = r#"{"specversion":"1.0","id":"e1","type":"com.qlik.v1.space.created","tenantid":"t1","data":{}}"#;
        let env = Envelope::parse(body.as_bytes()).unwrap();
        assert!(env.reload().is_none());
        assert!(!env.is_app_reload());
    }

    #[test]
    fn unrecognized_bodies_say_why() {
        assert!(matches!(
            Envelope::parse(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(Envelope::parse(b"[1,2]"), Err(EnvelopeError::NotObject));
        assert_eq!(
            Envelope::parse(br#"{"hello":"world"}"#),
            Err(EnvelopeError::Unrecognized)
        );
        assert_eq!(
            Envelope::parse(br#"{"specversion":"1.0","id":"x","type":"t"}"#),
            Err(EnvelopeError::MissingField {
                format: "cloudevents",
                field: "tenantid"
            })
        );
        assert_eq!(
            Envelope::parse(br#"{"eventType":"t","extensions":{"tenantId":"x"}}"#),
            Err(EnvelopeError::MissingField {
                format: "legacy",
                field: "eventId"
            })
        );
    }

    #[test]
    fn legacy_fields_are_added_for_butler() {
        let env = Envelope::parse(CLOUDEVENTS.as_bytes()).unwrap();
        let out = with_legacy_fields(CLOUDEVENTS.as_bytes(), &env).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["eventType"], APP_RELOAD_FINISHED);
        assert_eq!(v["eventId"], env.id.as_str());
        assert_eq!(v["cloudEventsVersion"], "0.1");
        assert_eq!(v["extensions"]["tenantId"], TENANT);
        assert_eq!(v["extensions"]["topLevelResourceId"], APP);
        assert_eq!(v["eventTypeVersion"], "1.0.0");
        assert_eq!(v["contentType"], "application/json");
        // CloudEvents fields stay as they were.
        assert_eq!(v["tenantid"], TENANT);
        assert_eq!(v["data"]["reloadId"], "674ab6e2c1d0f80012e3f4a5");
        // The result parses as a hybrid, identical in content.
        let again = Envelope::parse(&out).unwrap();
        assert_eq!(again.format, EnvelopeFormat::Hybrid);
        assert_eq!(again.id, env.id);
    }

    #[test]
    fn legacy_bodies_pass_butler_mode_unchanged() {
        let env = Envelope::parse(LEGACY.as_bytes()).unwrap();
        assert_eq!(
            with_legacy_fields(LEGACY.as_bytes(), &env).unwrap(),
            LEGACY.as_bytes()
        );
    }

    #[test]
    fn legacy_type_version_follows_the_type() {
        assert_eq!(
            legacy_type_version("com.qlik.v1.app.reload.finished"),
            "1.0.0"
        );
        assert_eq!(legacy_type_version("com.qlik.v2.thing"), "2.0.0");
        assert_eq!(legacy_type_version("custom"), "1.0.0");
        assert_eq!(legacy_type_version("com.qlik.vX.thing"), "1.0.0");
    }
}
