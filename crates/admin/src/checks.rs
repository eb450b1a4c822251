//! The relay's DNS records and its self-check (`madmail dns`, `madmail
//! doctor`) as admin resources, so the web UI can show them.
//!
//! Invariant: one doctor run at a time; a second request while one runs
//! is refused rather than queued, so the API cannot be made to open
//! connections without bound.

use serde_json::{Value, json};

use crate::{Admin, AdminError, Outcome, resources::method};

impl Admin {
    /// `GET /admin/dns`: the records the relay needs.
    pub(crate) fn dns_resource(&self, method: &str) -> Outcome {
        if method != "GET" {
            return Err(self::method(method));
        }
        let records = chatmail_doctor::expected_records(&self.settings);
        let zone = chatmail_doctor::zone(&records);
        Ok((
            200,
            json!({
                "domain": self.settings.domain.host(),
                "records": records,
                "zone": zone,
            }),
        ))
    }

    /// `GET /admin/doctor`: runs every check and returns the report.
    pub(crate) async fn doctor_resource(&self, method: &str) -> Outcome {
        if method != "GET" {
            return Err(self::method(method));
        }
        let Ok(_running) = self.doctor.try_lock() else {
            return Err(AdminError::Conflict(
                "a doctor run is already under way".into(),
            ));
        };
        let report = chatmail_doctor::run(&self.settings).await;
        Ok((200, serde_json::to_value(&report).unwrap_or(Value::Null)))
    }
}
