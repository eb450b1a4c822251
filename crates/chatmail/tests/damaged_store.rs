//! A database the relay cannot use at start (not a database, damaged,
//! not a file, from a newer version) stops it with one line naming the
//! file and what to do, exit status 1, never a panic; once the operator
//! has moved the file away, the relay starts on an empty store.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use sqlx::{Connection, SqliteConnection};

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// A relay that has run once (an account, then a clean stop), and its
/// database file.
async fn used_relay(last_octet: u8) -> (RelayProcess, PathBuf) {
    let ip = Ipv4Addr::new(127, 0, 65, last_octet);
    let mut relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, ""))
        .await
        .unwrap();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let user = relay.address("damaged12");
    let imaps = relay.addr(relay.ports.imaps);
    drop(
        Imap::login(imaps, &tls, &user, "damaged-store-password")
            .await
            .unwrap(),
    );
    let status = relay.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status}");
    let db = relay.state_dir().join("madmail.db");
    // The clean stop checkpointed the log: the file alone holds everything.
    assert!(!relay.state_dir().join("madmail.db-wal").exists());
    (relay, db)
}

/// `madmail run` on the relay's configuration; its exit status and
/// standard error, within 20 s.
fn run(relay: &RelayProcess) -> (i32, String) {
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(relay.config_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("madmail kept running on a damaged database");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

/// Asserts the refusal: status 1, one line with the file and `remedy`.
fn assert_refused(relay: &RelayProcess, db: &Path, remedy: &str) {
    let (code, stderr) = run(relay);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = format!("madmail: the database {} ", db.display());
    assert!(stderr.starts_with(&line), "{stderr}");
    assert!(stderr.contains(remedy), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// Moves the file away as the message says; the relay then starts.
async fn move_away_and_start(relay: &mut RelayProcess, db: &Path) {
    std::fs::rename(db, db.with_extension("db.damaged")).unwrap();
    relay.launch().await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_with_what_to_do() {
    let (mut relay, db) = used_relay(12).await;
    std::fs::write(&db, b"this is a mail spool, not SQLite\n".repeat(200)).unwrap();
    assert_refused(&relay, &db, "is not an SQLite database");
    assert_refused(&relay, &db, "restore it from a backup");
    move_away_and_start(&mut relay, &db).await;
}

#[tokio::test]
async fn a_damaged_database_is_named_with_what_to_do() {
    let (mut relay, db) = used_relay(13).await;
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 3 * 4096, "{} bytes", bytes.len());
    // Keep the header and the schema page, scramble the rest.
    for (i, byte) in bytes.iter_mut().enumerate().skip(3 * 4096) {
        *byte = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&db, bytes).unwrap();
    assert_refused(&relay, &db, "is damaged");
    assert_refused(&relay, &db, "sqlite3 FILE .recover");
    move_away_and_start(&mut relay, &db).await;
}

#[tokio::test]
async fn a_directory_in_place_of_the_database_is_named_with_what_to_do() {
    let (mut relay, db) = used_relay(14).await;
    std::fs::remove_file(&db).unwrap();
    std::fs::create_dir(&db).unwrap();
    assert_refused(&relay, &db, "check that it is a regular file");
    std::fs::remove_dir(&db).unwrap();
    relay.launch().await.unwrap();
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_named_with_what_to_do() {
    let (relay, db) = used_relay(15).await;
    let url = format!("sqlite://{}", db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from the future', 1, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_refused(&relay, &db, "was last used by a newer madmail");
}
