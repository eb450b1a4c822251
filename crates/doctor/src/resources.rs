//! Free disk space of the state directory, available memory and the load
//! average, against the limits at which the relay stops creating accounts
//! (`chatmail_accounts::pressure`: 1 GB of disk, 200 MB of memory, and
//! `registration.pause_above_load` when set).
//!
//! Below a limit: a failure (new users are refused). Below twice the
//! limit: a warning. The load is only ever a warning: it changes by the
//! minute. A reading that cannot be taken warns.

use chatmail_accounts::pressure::{MAX_LOAD, MIN_DISK, MIN_MEMORY, Probe as _, SystemProbe};
use chatmail_config::Settings;

use crate::{Check, Status};

pub(crate) fn check(settings: &Settings) -> Vec<Check> {
    let dir = &settings.config.state_dir;
    let readings = SystemProbe::new(dir).read();
    let disk_name = format!("disk {}", dir.display());
    vec![
        room(
            &disk_name,
            readings.disk,
            MIN_DISK,
            "free space",
            "free space on that file system, or move state_dir to a larger one",
        ),
        room(
            "memory",
            readings.memory,
            MIN_MEMORY,
            "available memory",
            "stop other services on this host, or add memory",
        ),
        load(readings.load, settings.registration().pause_above_load),
    ]
}

/// A resource that must stay above `min`.
fn room(name: &str, value: Option<u64>, min: u64, what: &str, fix: &str) -> Check {
    let Some(value) = value else {
        return Check::warn(name, format!("{what} unknown: cannot be read"), fix);
    };
    let detail = format!(
        "{what} {} (registration pauses below {})",
        bytes(value),
        bytes(min)
    );
    let status = if value < min {
        Status::Fail
    } else if value < min.saturating_mul(2) {
        Status::Warn
    } else {
        return Check::pass(name, detail);
    };
    Check::new(name, status, detail, Some(fix.to_owned()))
}

fn load(load: Option<f64>, pause_above: Option<f64>) -> Check {
    let Some(load) = load else {
        return Check::warn(
            "load",
            "unknown: /proc/loadavg cannot be read",
            "none needed",
        );
    };
    let (limit, note) = match pause_above {
        Some(max) => (max, format!("registration pauses above {max}")),
        None => (
            MAX_LOAD,
            format!(
                "registration.pause_above_load is unset; the chatmail relay pauses above {MAX_LOAD}"
            ),
        ),
    };
    let detail = format!("1-minute load average {load:.2} ({note})");
    if load > limit {
        let fix = "find what keeps the machine busy (top), or move the relay to a larger host";
        return Check::warn("load", detail, fix);
    }
    Check::pass("load", detail)
}

/// Bytes in decimal units, as the limits are stated.
fn bytes(value: u64) -> String {
    const GB: u64 = 1000 * 1000 * 1000;
    const MB: u64 = 1000 * 1000;
    if value >= GB {
        format!("{:.1} GB", value as f64 / GB as f64)
    } else {
        format!("{} MB", value / MB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_limit_fails_and_near_it_warns() {
        let fix = "f";
        assert_eq!(
            room("d", Some(MIN_DISK - 1), MIN_DISK, "free", fix).status,
            Status::Fail
        );
        assert_eq!(
            room("d", Some(MIN_DISK + 1), MIN_DISK, "free", fix).status,
            Status::Warn
        );
        let roomy = room("d", Some(5 * MIN_DISK), MIN_DISK, "free space", fix);
        assert_eq!(roomy.status, Status::Pass);
        assert_eq!(
            roomy.detail,
            "free space 5.0 GB (registration pauses below 1.0 GB)"
        );
        assert_eq!(room("d", None, MIN_DISK, "free", fix).status, Status::Warn);
    }

    #[test]
    fn a_high_load_only_warns() {
        assert_eq!(load(Some(9.0), Some(5.0)).status, Status::Warn);
        assert_eq!(load(Some(6.0), None).status, Status::Warn);
        let calm = load(Some(0.5), Some(2.0));
        assert_eq!(calm.status, Status::Pass);
        assert!(calm.detail.contains("pauses above 2"), "{calm:?}");
    }

    #[test]
    fn reads_this_machine() {
        let settings = chatmail_config::parse("mail_domain = \"1.2.3.4\"").unwrap();
        let checks = check(&settings);
        assert_eq!(checks.len(), 3);
        assert!(checks[0].name.starts_with("disk "));
    }
}
