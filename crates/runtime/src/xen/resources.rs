//! Resources of a running zone: the vCPU online mask and the balloon target in xenstore,
//! bounded by what the domain was built with (read from its dom0-owned nodes).

use std::io::{Read, Write};

use spore_xen::DomId;
use spore_xen::devices;
use spore_xen::xs::XsClient;
use uuid::Uuid;

use super::xen;
use crate::{Resources, Result, RuntimeError};

/// Writes the vCPU online mask and the balloon target, within what the domain was built
/// with (read from its dom0-owned nodes).
pub fn set<T: Read + Write>(
    xs: &mut XsClient<T>,
    zone: Uuid,
    domid: DomId,
    r: Resources,
    min_mib: u64,
) -> Result<()> {
    let invalid = |detail: String| RuntimeError::InvalidSpec { zone, detail };
    let ctx = |what: &str| xen(format!("{what} of domain {domid}"));
    let home = format!("/local/domain/{domid}");
    let vcpus = xs
        .directory(&format!("{home}/cpu"))
        .map_err(ctx("reading the vCPUs"))?
        .unwrap_or_default()
        .iter()
        .filter(|n| n.parse::<u32>().is_ok())
        .count() as u32;
    let max_kib = devices::parse_num(
        xs.read(&format!("{home}/memory/static-max"))
            .map_err(ctx("reading the memory size"))?,
    )
    .unwrap_or(0) as u64;
    check(r, vcpus, max_kib, min_mib).map_err(invalid)?;
    xs.transaction(|tx| {
        for v in 0..vcpus {
            let state = if v < r.vcpus { "online" } else { "offline" };
            tx.write(&format!("{home}/cpu/{v}/availability"), state.as_bytes())?;
        }
        tx.write(
            &format!("{home}/memory/target"),
            (r.memory_mib.saturating_mul(1024)).to_string().as_bytes(),
        )
    })
    .map_err(ctx("writing the resources"))
}

/// Whether `r` fits a domain built with `vcpus` vCPUs and `max_kib` of memory.
fn check(r: Resources, vcpus: u32, max_kib: u64, min_mib: u64) -> Result<(), String> {
    if r.vcpus == 0 || r.vcpus > vcpus {
        return Err(format!(
            "{} vCPUs: the zone was created with {vcpus}, so 1 to {vcpus} can be online",
            r.vcpus
        ));
    }
    if r.memory_mib.saturating_mul(1024) > max_kib || r.memory_mib < min_mib {
        return Err(format!(
            "{} MiB of memory: the zone can use {min_mib} to {} MiB",
            r.memory_mib,
            max_kib / 1024
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(vcpus: u32, memory_mib: u64) -> Resources {
        Resources { vcpus, memory_mib }
    }

    #[test]
    fn resources_stay_within_what_the_domain_was_built_with() {
        assert_eq!(check(r(2, 128), 2, 128 * 1024, 80), Ok(()));
        assert_eq!(check(r(1, 80), 2, 128 * 1024, 80), Ok(()));
        assert_eq!(
            check(r(3, 128), 2, 128 * 1024, 80).unwrap_err(),
            "3 vCPUs: the zone was created with 2, so 1 to 2 can be online"
        );
        assert!(check(r(0, 128), 2, 128 * 1024, 80).is_err());
        assert_eq!(
            check(r(1, 129), 2, 128 * 1024, 80).unwrap_err(),
            "129 MiB of memory: the zone can use 80 to 128 MiB"
        );
        assert!(check(r(1, 79), 2, 128 * 1024, 80).is_err());
        // No overflow on absurd requests; a missing static-max (0) refuses everything.
        assert!(check(r(1, u64::MAX), 2, 128 * 1024, 80).is_err());
        assert!(check(r(1, 128), 2, 0, 80).is_err());
    }
}
