//! `adopt`: in a fresh process, the one zone a previous process left running is listed, its
//! console and IDM channel re-attached, and it is destroyed without a trace.

use std::time::Duration;

use anyhow::{Result, ensure};
use spore_runtime::Backend;
use spore_runtime::xen::XenBackend;

use crate::checks::{assert_clean, domid_of, loops_of};
use crate::console::Console;
use crate::idm;
use crate::lab::Lab;
use crate::report::result;

pub async fn run(lab: Lab) -> Result<()> {
    let backend = XenBackend::new(lab.config())?;
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 1 && listed[0].running,
        "one running zone expected, found {listed:?}"
    );
    let zone = listed[0].zone_id;
    let domid = domid_of(&listed[0])?;
    let console = Console::spawn(backend.open_console(zone).await?);
    console.wait_for("tick", Duration::from_secs(30)).await?;
    let mut idm = idm::framed(backend.open_idm(zone).await?);
    idm::ping(&mut idm, 9, 4242).await?;
    let loops = loops_of(domid)?;
    backend.destroy(zone).await?;
    assert_clean(zone, domid, &loops).await?;
    result(format!("adopt_other_process=OK zone={zone} domid={domid}"));
    Ok(())
}
