//! The reads alerts are enriched with: reload, script log, app, app item (tags), user.

use reqwest::Method;

use super::responses::AppResponse;
use super::{ApiError, AppInfo, AppItem, Call, Me, Overflow, ReloadInfo, TenantClient, UserInfo};

impl TenantClient {
    /// `GET /api/v1/reloads/{reloadId}`.
    pub async fn reload(&self, reload_id: &str) -> Result<ReloadInfo, ApiError> {
        self.get_json(self.url(&["reloads", reload_id])).await
    }

    /// `GET /api/v1/apps/{appId}/reloads/logs/{reloadId}` (`text/plain`). The second value is
    /// true when the log was longer than `maxScriptLogBytes` and only its tail was kept.
    pub async fn script_log(
        &self,
        app_id: &str,
        reload_id: &str,
    ) -> Result<(String, bool), ApiError> {
        let url = self.url(&["apps", app_id, "reloads", "logs", reload_id]);
        let call = Call::new(Method::GET, url)
            .accept("text/plain")
            .limit(self.settings.max_script_log_bytes, Overflow::KeepTail);
        let body = self.send(call).await?;
        let mut text = String::from_utf8_lossy(&body.bytes).into_owned();
        if body.truncated {
            // Drop the partial first line left by the cut.
            if let Some(pos) = text.find('\n') {
                text.drain(..=pos);
            }
        }
        Ok((text, body.truncated))
    }

    /// `GET /api/v1/apps/{appId}`: its `attributes`.
    pub async fn app(&self, app_id: &str) -> Result<AppInfo, ApiError> {
        let response: AppResponse = self.get_json(self.url(&["apps", app_id])).await?;
        response
            .attributes
            .ok_or_else(|| ApiError::Body("no `attributes` in the app".to_owned()))
    }

    /// `GET /api/v1/items?resourceType=app&resourceId={appId}`: the app's tags and file size;
    /// `None` when the app is not among the items returned.
    pub async fn app_item(&self, app_id: &str) -> Result<Option<AppItem>, ApiError> {
        let mut url = self.url(&["items"]);
        url.query_pairs_mut()
            .append_pair("resourceType", "app")
            .append_pair("resourceId", app_id)
            .append_pair("noActions", "true")
            .append_pair("limit", "100");
        let body: serde_json::Value = self.get_json(url).await?;
        Ok(AppItem::from_items(&body, app_id))
    }

    /// `GET /api/v1/users/me`: the JWT's own user, whose `tenantId` is the id of the tenant
    /// the JWT belongs to (what events carry). A [`ApiError::Body`] when the answer has none.
    pub async fn users_me(&self) -> Result<Me, ApiError> {
        let me: Me = self.get_json(self.url(&["users", "me"])).await?;
        match me.tenant_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => Ok(me),
            _ => Err(ApiError::Body(
                "no `tenantId` in the answer of /api/v1/users/me".to_owned(),
            )),
        }
    }

    /// `GET /api/v1/users/{userId}`.
    pub async fn user(&self, user_id: &str) -> Result<UserInfo, ApiError> {
        self.get_json(self.url(&["users", user_id])).await
    }
}
