//! `madmail doctor` and `madmail dns --check`: the checks of
//! `chatmail_doctor`, one line each (the fix indented below) or as JSON.
//! Exit status 1 when a check failed; warnings alone keep 0.

use std::path::PathBuf;
use std::process::ExitCode;

use chatmail_config::Settings;
use chatmail_doctor::{Report, Status};

#[derive(clap::Args)]
pub struct DoctorOptions {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/madmail/chatmail.toml")]
    config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `madmail doctor`.
pub fn doctor(options: DoctorOptions) -> anyhow::Result<ExitCode> {
    let settings = chatmail_config::load(&options.config)?;
    let report = crate::runtime()?.block_on(chatmail_doctor::run(&settings));
    print(&report, "doctor", options.json)
}

/// `madmail dns --check`.
pub fn dns_check(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let report = crate::runtime()?.block_on(chatmail_doctor::check_dns(settings));
    print(&report, "dns", json)
}

fn print(report: &Report, what: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render(report, what));
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per check, the fix of a warning or failure below it, then a
/// summary line.
fn render(report: &Report, what: &str) -> String {
    let mut out = String::new();
    for check in &report.checks {
        let mark = match check.status {
            Status::Pass => '✓',
            Status::Warn => '!',
            Status::Fail => '✗',
        };
        out.push_str(&format!("{mark} {}: {}\n", check.name, check.detail));
        if let (Some(fix), false) = (&check.fix, check.status == Status::Pass) {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let warnings = report.count(Status::Warn);
    out.push_str(&format!(
        "{what}: {} passed, {warnings} warning{}, {} failed\n",
        report.count(Status::Pass),
        if warnings == 1 { "" } else { "s" },
        report.count(Status::Fail),
    ));
    out
}
