//! Behaviour of the store through its public API, on a real SQLite file.

use std::sync::Arc;

use bytes::Bytes;
use chatmail_store::{Created, FlagOp, NewMessage, Store, StoreError, StoreOptions};
use tempfile::TempDir;

async fn open(dir: &TempDir) -> Store {
    let path = dir.path().join("nested/dir/madmail.db");
    Store::open(StoreOptions {
        path,
        max_batch: 256,
    })
    .await
    .unwrap()
}

fn message(text: &str) -> NewMessage {
    NewMessage {
        body: Bytes::from(format!("Subject: {text}\r\n\r\n{text}\r\n")),
        flags: Vec::new(),
        internal_date: 1_700_000_000,
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn new_account(store: &Store, address: &str) -> i64 {
    match store
        .create_account(address, "$argon2id$fake")
        .await
        .unwrap()
    {
        Created::New(account) => account.id,
        Created::Existing(_) => panic!("{address} existed"),
    }
}

#[tokio::test]
async fn data_survives_restart_and_uidnext_continues() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "alice@example.org").await;
    let first = store.deliver(&[id], message("one")).await.unwrap();
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap();
    store.close().await;
    assert!(matches!(
        store.deliver(&[id], message("late")).await,
        Err(StoreError::Closed)
    ));

    let store = open(&dir).await;
    let again = store.mailbox(id, "inbox").await.unwrap().unwrap();
    assert_eq!(again.uidvalidity, inbox.uidvalidity);
    assert_eq!(again.uidnext, 2);
    let body = store
        .body(first[0].mailbox, first[0].uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, Bytes::from("Subject: one\r\n\r\none\r\n"));
    let second = store.deliver(&[id], message("two")).await.unwrap();
    assert_eq!(second[0].uid, 2);
}

#[tokio::test]
async fn concurrent_deliveries_get_distinct_ascending_uids_in_few_commits() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "bob@example.org").await;
    let before = store.commit_count();
    let mut tasks = Vec::new();
    for task in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut uids = Vec::new();
            for n in 0..10 {
                let d = store
                    .deliver(&[id], message(&format!("{task}-{n}")))
                    .await
                    .unwrap();
                uids.push(d[0].uid);
            }
            uids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let uids = task.await.unwrap();
        // Each task's own deliveries are ordered.
        assert!(uids.windows(2).all(|w| w[0] < w[1]));
        all.extend(uids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1..=320).collect::<Vec<u32>>());
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap();
    assert_eq!(store.uids(inbox.id).await.unwrap(), all);
    let commits = store.commit_count() - before;
    assert!(commits < 320, "{commits} commits for 320 deliveries");
}

#[tokio::test]
async fn one_failing_job_does_not_poison_its_batch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "carol@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        // Every other job appends to a mailbox that does not exist.
        let target = if n % 2 == 0 { inbox.id } else { 999_999 };
        tasks.push(tokio::spawn(async move {
            store.append(target, message("x")).await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(StoreError::NoMailbox) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(stored, 20);
    assert_eq!(store.uids(inbox.id).await.unwrap().len(), 20);
}

#[tokio::test]
async fn create_account_race_yields_one_new_and_one_inbox() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_account("race@example.org", "$h")
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    for task in tasks {
        if let Created::New(_) = task.await.unwrap() {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    let account = store.account("race@example.org").await.unwrap().unwrap();
    let boxes = store.mailboxes(account.id).await.unwrap();
    assert_eq!(boxes.len(), 1);
    assert_eq!(boxes[0].name, "INBOX");
}

#[tokio::test]
async fn set_flags_adds_removes_and_replaces() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "dave@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap().id;
    let uid = store
        .append(
            inbox,
            NewMessage {
                flags: strings(&["\\seen"]),
                ..message("f")
            },
        )
        .await
        .unwrap();
    let added = store
        .set_flags(
            inbox,
            &[uid, 77],
            FlagOp::Add,
            &strings(&["\\Flagged", "$Label"]),
        )
        .await
        .unwrap();
    assert_eq!(
        added,
        vec![(uid, strings(&["\\Seen", "\\Flagged", "$Label"]))]
    );
    let removed = store
        .set_flags(inbox, &[uid], FlagOp::Remove, &strings(&["\\SEEN"]))
        .await
        .unwrap();
    assert_eq!(removed[0].1, strings(&["\\Flagged", "$Label"]));
    store
        .set_flags(inbox, &[uid], FlagOp::Replace, &strings(&["\\Answered"]))
        .await
        .unwrap();
    let meta = store.messages(inbox, 0).await.unwrap();
    assert_eq!(meta[0].flags, strings(&["\\Answered"]));
    assert_eq!(meta[0].internal_date, 1_700_000_000);
    assert_eq!(meta[0].size, message("f").body.len() as u64);
}

#[tokio::test]
async fn expunge_removes_only_deleted_messages() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "erin@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap().id;
    for n in 0..4 {
        store.append(inbox, message(&n.to_string())).await.unwrap();
    }
    store
        .set_flags(inbox, &[1, 2, 4], FlagOp::Add, &strings(&["\\Deleted"]))
        .await
        .unwrap();
    assert_eq!(store.expunge(inbox, Some(&[2, 3])).await.unwrap(), vec![2]);
    assert_eq!(store.expunge(inbox, None).await.unwrap(), vec![1, 4]);
    assert_eq!(store.uids(inbox).await.unwrap(), vec![3]);
    // UIDs are never reused after an expunge.
    assert_eq!(store.append(inbox, message("5")).await.unwrap(), 5);
}

#[tokio::test]
async fn copy_keeps_originals_and_move_removes_them() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "frank@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap().id;
    let trash = store.create_mailbox(id, "Trash").await.unwrap();
    assert_eq!(trash.special_use.as_deref(), Some("\\Trash"));
    assert!(matches!(
        store.create_mailbox(id, "Trash").await,
        Err(StoreError::MailboxExists)
    ));
    for n in 0..3 {
        store
            .append(
                inbox,
                NewMessage {
                    flags: strings(&["\\Seen"]),
                    ..message(&n.to_string())
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.copy(inbox, &[1, 3, 9], trash.id).await.unwrap(),
        vec![(1, 1), (3, 2)]
    );
    assert_eq!(store.uids(inbox).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(
        store.move_messages(inbox, &[2], trash.id).await.unwrap(),
        vec![(2, 3)]
    );
    assert_eq!(store.uids(inbox).await.unwrap(), vec![1, 3]);
    let copied = store.messages(trash.id, 0).await.unwrap();
    assert_eq!(
        copied.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(copied.iter().all(|m| m.flags == strings(&["\\Seen"])));
    let body = store.body(trash.id, 3).await.unwrap().unwrap();
    assert_eq!(body, message("1").body);
    let mb = message("0").body.len() as u64;
    assert_eq!(store.usage(id).await.unwrap(), 5 * mb);
}

#[tokio::test]
async fn subscribers_wake_on_delivery_to_their_account_only() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let a = new_account(&store, "gina@example.org").await;
    let b = new_account(&store, "hank@example.org").await;
    let mut rx_a = store.subscribe(a);
    let rx_b = store.subscribe(b);
    let waiter = tokio::spawn(async move {
        rx_a.changed().await.unwrap();
        *rx_a.borrow()
    });
    store.deliver(&[a], message("ping")).await.unwrap();
    let value = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value, 1);
    assert!(!rx_b.has_changed().unwrap());
}

#[tokio::test]
async fn delete_account_removes_everything() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "ivan@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap().id;
    store.deliver(&[id], message("bye")).await.unwrap();
    store
        .add_user_metadata(id, "/private/devicetoken", "tok")
        .await
        .unwrap();
    assert!(store.delete_account("ivan@example.org").await.unwrap());
    assert!(!store.delete_account("ivan@example.org").await.unwrap());
    assert!(store.account("ivan@example.org").await.unwrap().is_none());
    assert!(store.mailboxes(id).await.unwrap().is_empty());
    assert!(store.uids(inbox).await.unwrap().is_empty());
    assert!(
        store
            .user_metadata(id, "/private/devicetoken")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.usage(id).await.unwrap(), 0);
    assert!(matches!(
        store.deliver(&[id], message("late")).await,
        Err(StoreError::NoAccount)
    ));
}

#[tokio::test]
async fn metadata_values_accumulate_per_key() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "judy@example.org").await;
    store
        .add_user_metadata(id, "/private/devicetoken", "one")
        .await
        .unwrap();
    store
        .add_user_metadata(id, "/private/devicetoken", "two")
        .await
        .unwrap();
    store
        .add_user_metadata(id, "/private/devicetoken", "one")
        .await
        .unwrap();
    let mut values = store
        .user_metadata(id, "/private/devicetoken")
        .await
        .unwrap();
    values.sort();
    assert_eq!(values, strings(&["one", "two"]));
    assert!(
        store
            .user_metadata(id, "/private/other")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.add_user_metadata(424242, "/k", "v").await,
        Err(StoreError::NoAccount)
    ));
}

#[tokio::test]
async fn mailboxes_keep_uidvalidity_and_inbox_cannot_be_deleted() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "kate@example.org").await;
    let first = store.create_mailbox(id, "Archive").await.unwrap();
    store.delete_mailbox(id, "Archive").await.unwrap();
    let second = store.create_mailbox(id, "Archive").await.unwrap();
    // A recreated mailbox must not reuse the old UIDVALIDITY (RFC 3501 §2.3.1.1).
    assert_ne!(first.uidvalidity, second.uidvalidity);
    assert!(matches!(
        store.delete_mailbox(id, "inbox").await,
        Err(StoreError::NoMailbox)
    ));
    assert!(matches!(
        store.delete_mailbox(id, "Nope").await,
        Err(StoreError::NoMailbox)
    ));
    assert!(matches!(
        store.create_mailbox(id, "Inbox").await,
        Err(StoreError::MailboxExists)
    ));
    let names: Vec<_> = store
        .mailboxes(id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, strings(&["Archive", "INBOX"]));
}

#[tokio::test]
async fn deliver_to_several_recipients_skips_duplicates_and_records_logins() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let a = new_account(&store, "lena@example.org").await;
    let b = new_account(&store, "mike@example.org").await;
    let copies = store.deliver(&[a, b, a], message("hi")).await.unwrap();
    assert_eq!(copies.len(), 2);
    assert_eq!((copies[0].account, copies[1].account), (a, b));
    store.record_login(a, 20_000).await.unwrap();
    let accounts = store.accounts().await.unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].last_login_day, Some(20_000));
    assert!(matches!(
        store.record_login(999, 1).await,
        Err(StoreError::NoAccount)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_2000_deliveries_from_64_tasks() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "bench@example.org").await;
    let before = store.commit_count();
    let started = std::time::Instant::now();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, counter) = (store.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2000 {
                store.deliver(&[id], message("bench")).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = store.commit_count() - before;
    eprintln!(
        "2000 deliveries: {:.0} msg/s, {commits} commits",
        2000.0 / elapsed
    );
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap();
    assert_eq!(inbox.uidnext, 2001);
    assert!(commits < 1000, "{commits} commits");
}

#[tokio::test]
async fn flag_expunge_and_move_changes_wake_subscribers_but_no_ops_do_not() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = new_account(&store, "nina@example.org").await;
    let inbox = store.mailbox(id, "INBOX").await.unwrap().unwrap().id;
    let other = store.create_mailbox(id, "Other").await.unwrap().id;
    store.append(inbox, message("a")).await.unwrap();
    store.append(inbox, message("b")).await.unwrap();
    let mut rx = store.subscribe(id);
    let changed = |rx: &mut tokio::sync::watch::Receiver<u64>| {
        let seen = rx.has_changed().unwrap();
        rx.borrow_and_update();
        seen
    };
    store
        .set_flags(inbox, &[1], FlagOp::Add, &strings(&["\\Seen"]))
        .await
        .unwrap();
    assert!(changed(&mut rx));
    store
        .set_flags(inbox, &[1], FlagOp::Add, &strings(&["\\Seen"]))
        .await
        .unwrap();
    assert!(!changed(&mut rx), "flags unchanged: no event");
    assert!(store.expunge(inbox, None).await.unwrap().is_empty());
    assert!(!changed(&mut rx), "nothing expunged: no event");
    store
        .set_flags(inbox, &[1], FlagOp::Add, &strings(&["\\Deleted"]))
        .await
        .unwrap();
    changed(&mut rx);
    store.expunge(inbox, None).await.unwrap();
    assert!(changed(&mut rx));
    store.move_messages(inbox, &[2], other).await.unwrap();
    assert!(changed(&mut rx));
    store.append(other, message("c")).await.unwrap();
    assert!(changed(&mut rx));
}
