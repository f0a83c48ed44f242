//! What the tenant REST API answers to the reads alerts are enriched with, reduced to the
//! fields alerts use. Every field is optional: Qlik adds and drops attributes over time and an
//! alert must not fail because of that.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/v1/reloads/{reloadId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadInfo {
    pub id: Option<String>,
    pub app_id: Option<String>,
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    /// What started the reload: `hub`, `chronos`, `external`, `automations`, `data-refresh`.
    #[serde(rename = "type")]
    pub reload_type: Option<String>,
    /// `QUEUED`, `RELOADING`, `SUCCEEDED`, `FAILED`, `CANCELED`, `EXCEEDED_LIMIT`, …
    pub status: Option<String>,
    /// The short reload log Qlik keeps with the reload (not the full script log).
    pub log: Option<String>,
    pub partial: Option<bool>,
    pub creation_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// `attributes` of `GET /api/v1/apps/{appId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Owner as `auth0|…` subject; [`Self::owner_id`] is the user id for `/api/v1/users/{id}`.
    pub owner: Option<String>,
    pub owner_id: Option<String>,
    pub published: Option<bool>,
    pub publish_time: Option<String>,
    pub has_section_access: Option<bool>,
    pub thumbnail: Option<String>,
    pub space_id: Option<String>,
    pub last_reload_time: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AppResponse {
    pub attributes: Option<AppInfo>,
}

/// The app's entry in `GET /api/v1/items?resourceType=app&resourceId={appId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppItem {
    /// Tag names, from `meta.tags[].name` (or a top-level `tags` list).
    pub tags: Vec<String>,
    /// `resourceSize.appFile` in bytes.
    pub app_file_size: Option<u64>,
}

impl AppItem {
    /// Picks the item whose `resourceId` is the app (Butler insists on exactly that one) and
    /// reads its tags in either of the shapes Qlik has used.
    pub(crate) fn from_items(body: &Value, app_id: &str) -> Option<AppItem> {
        let items = body.get("data")?.as_array()?;
        let item = items
            .iter()
            .find(|i| i.get("resourceId").and_then(Value::as_str) == Some(app_id))
            .or_else(|| {
                // An item without resourceId is still the answer to a query by resourceId.
                items
                    .iter()
                    .find(|i| i.get("resourceId").is_none())
                    .filter(|_| items.len() == 1)
            })?;
        let tag_names = |tags: &Value| -> Vec<String> {
            tags.as_array()
                .map(|tags| {
                    tags.iter()
                        .filter_map(|t| {
                            t.as_str()
                                .or_else(|| t.get("name").and_then(Value::as_str))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut tags = item
            .get("meta")
            .and_then(|m| m.get("tags"))
            .map(tag_names)
            .unwrap_or_default();
        if tags.is_empty()
            && let Some(top) = item.get("tags")
        {
            tags = tag_names(top);
        }
        let app_file_size = item
            .get("resourceSize")
            .and_then(|s| s.get("appFile"))
            .and_then(Value::as_u64);
        Some(AppItem {
            tags,
            app_file_size,
        })
    }
}

/// `GET /api/v1/users/{userId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub picture: Option<String>,
}

/// `GET /api/v1/users/me`: the JWT's user; only the ids are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Me {
    pub id: Option<String>,
    #[serde(rename = "tenantId")]
    pub tenant_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_from_meta_or_top_level() {
        let app = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
        let body = json!({"data": [
            {"resourceId": "other", "meta": {"tags": [{"name": "wrong"}]}},
            {"resourceId": app, "resourceSize": {"appFile": 1234},
             "meta": {"tags": [{"id": "t1", "name": "Finance"}, {"id": "t2", "name": "Butler - Send Teams alert if app reload fails"}]}}
        ]});
        let item = AppItem::from_items(&body, app).expect("item");
        assert_eq!(
            item.tags,
            ["Finance", "Butler - Send Teams alert if app reload fails"]
        );
        assert_eq!(item.app_file_size, Some(1234));

        let body = json!({"data": [{"resourceId": app, "tags": ["a", {"name": "b"}]}]});
        assert_eq!(
            AppItem::from_items(&body, app).expect("item").tags,
            ["a", "b"]
        );

        assert!(AppItem::from_items(&json!({"data": []}), app).is_none());
        assert!(AppItem::from_items(&json!({"nope": 1}), app).is_none());
    }
}
