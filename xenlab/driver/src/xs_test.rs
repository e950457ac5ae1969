//! `xs-test`: spore-xen's xenstore client against the real xenstored: read, write, mkdir,
//! directory, permissions, a transaction retried after a conflict, sync and async watches,
//! concurrent async requests.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use spore_xen::xs::{Access, AsyncXs, Perm, XsClient};

use crate::report::result;

pub async fn run() -> Result<()> {
    let mut xs = XsClient::open().context("connecting to xenstored")?;
    let base = "/local/domain/0/spore-xs-test";
    xs.rm(base)?;
    xs.write(&format!("{base}/a"), b"hello")?;
    ensure!(
        xs.read_string(&format!("{base}/a"))?.as_deref() == Some("hello"),
        "read back"
    );
    ensure!(
        xs.read(&format!("{base}/missing"))?.is_none(),
        "missing node reads as None"
    );
    xs.mkdir(&format!("{base}/dir/sub"))?;
    let mut d = xs.directory(base)?.context("directory")?;
    d.sort();
    ensure!(d == ["a", "dir"], "directory listing {d:?}");
    result("xs_read_write_mkdir_directory=OK");

    let perms = [
        Perm::new(0, Access::None),
        Perm::new(5, Access::Read),
        Perm::new(7, Access::Both),
    ];
    xs.set_perms(&format!("{base}/a"), &perms)?;
    let got = xs.get_perms(&format!("{base}/a"))?;
    ensure!(got == perms, "perms {got:?}");
    result("xs_perms=OK");

    // A transaction that conflicts with another client's write is retried.
    let mut other = XsClient::open()?;
    let mut attempts = 0;
    xs.transaction(|tx| {
        attempts += 1;
        let v = tx.read_string(&format!("{base}/a"))?.unwrap_or_default();
        if attempts == 1 {
            other.write(&format!("{base}/a"), b"interloper")?;
        }
        tx.write(&format!("{base}/a"), format!("{v}+tx").as_bytes())
    })?;
    let v = xs.read_string(&format!("{base}/a"))?.unwrap_or_default();
    ensure!(
        attempts == 2 && v == "interloper+tx",
        "attempts {attempts}, value {v}"
    );
    result(format!("xs_transaction_retry=OK attempts={attempts}"));

    watches(&mut xs, &mut other, base)?;
    concurrent_async(base).await?;
    ensure!(xs.get_domain_path(0)? == "/local/domain/0", "domain path");
    ensure!(
        !xs.is_domain_introduced(4000).unwrap_or(false),
        "domain 4000 unknown"
    );
    xs.rm(base)?;
    ensure!(xs.read(base)?.is_none(), "rm");
    result("xs_test=PASS");
    Ok(())
}

/// Watches on the blocking client: the initial event, then one per change below the path.
fn watches(xs: &mut XsClient, other: &mut XsClient, base: &str) -> Result<()> {
    xs.watch(base, "tok")?;
    let first = xs.next_watch_event()?;
    ensure!(
        first.path == base && first.token == "tok",
        "initial event {first:?}"
    );
    other.write(&format!("{base}/dir/sub/x"), b"1")?;
    let ev = xs.next_watch_event()?;
    ensure!(ev.path == format!("{base}/dir/sub/x"), "event {ev:?}");
    xs.unwatch(base, "tok")?;
    result("xs_watch_sync=OK");
    Ok(())
}

/// The async client: 32 concurrent requests, and a watch that fires while they run.
async fn concurrent_async(base: &str) -> Result<()> {
    let axs = AsyncXs::connect().await?;
    let mut w = axs.watch(&format!("{base}/async")).await?;
    w.next().await.context("initial async event")?;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let axs = axs.clone();
        let p = format!("{base}/async/k{i}");
        tasks.push(tokio::spawn(async move {
            axs.write(&p, i.to_string().as_bytes()).await?;
            axs.read_string(&p).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        ensure!(
            t.await??.as_deref() == Some(i.to_string().as_str()),
            "async value {i}"
        );
    }
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await?
        .context("async event")?;
    ensure!(
        ev.path.starts_with(&format!("{base}/async/k")),
        "async event {ev:?}"
    );
    result("xs_async_concurrent_watch=OK");
    Ok(())
}
