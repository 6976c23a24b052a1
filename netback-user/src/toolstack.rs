//! What the toolstack (libxl) does for a vif before any driver runs: create the frontend and
//! backend directories with their permissions, and remove them afterwards.

use netstage_platform::xenbus::{VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, XsResult};
use netstage_platform::DomId;

/// Removes `path` if it exists (xenstored refuses to remove a node whose parent is absent).
fn rm_if_present<X: XenStore>(
    xs: &X,
    tx: netstage_platform::xenstore::TxId,
    path: &str,
) -> XsResult<()> {
    match xs.rm(tx, path) {
        Err(e) if e.errno() == Some(netstage_platform::sim::xenstored::wire::Errno::ENOENT) => {
            Ok(())
        }
        r => r,
    }
}

/// A locally administered MAC address for guest `fe`, vif `devid`.
pub fn mac_for(fe: DomId, devid: u32) -> String {
    let [a, b] = fe.to_be_bytes();
    format!("00:16:3e:{a:02x}:{b:02x}:{:02x}", devid & 0xff)
}

/// Creates vif `devid` of guest `fe` served by backend domain `be`: the guest's
/// `/local/domain/<fe>` (owned by it), the frontend directory (owned by the guest, readable
/// by the backend) and the backend directory (owned by the backend, readable by the guest),
/// with the keys libxl writes, both at state Initialising. Uses one transaction.
pub fn create_vif<X: XenStore>(xs: &X, be: DomId, fe: DomId, devid: u32) -> XsResult<VifPaths> {
    let p = VifPaths::new(be, fe, devid);
    let mac = mac_for(fe, devid);
    let fe_perms = [format!("n{fe}"), format!("r{be}")];
    let be_perms = [format!("n{be}"), format!("r{fe}")];
    let fe_perms: Vec<&str> = fe_perms.iter().map(|s| s.as_str()).collect();
    let be_perms: Vec<&str> = be_perms.iter().map(|s| s.as_str()).collect();
    let init = XenbusState::Initialising.as_str();
    xs.transaction(10, |tx| {
        let dom_dir = format!("/local/domain/{fe}");
        xs.mkdir(tx, &dom_dir)?;
        xs.set_perms(tx, &dom_dir, &[&format!("n{fe}")])?;
        for d in [format!("{dom_dir}/device"), format!("{dom_dir}/device/vif")] {
            xs.mkdir(tx, &d)?;
            xs.set_perms(tx, &d, &fe_perms)?;
        }
        rm_if_present(xs, tx, &p.frontend)?;
        xs.mkdir(tx, &p.frontend)?;
        xs.set_perms(tx, &p.frontend, &fe_perms)?;
        for (k, v) in [
            ("backend", p.backend.as_str()),
            ("backend-id", &be.to_string()),
            ("handle", &devid.to_string()),
            ("mac", &mac),
            ("state", &init),
        ] {
            xs.write(tx, &format!("{}/{k}", p.frontend), v.as_bytes())?;
        }
        rm_if_present(xs, tx, &p.backend)?;
        xs.mkdir(tx, &p.backend)?;
        xs.set_perms(tx, &p.backend, &be_perms)?;
        for (k, v) in [
            ("frontend", p.frontend.as_str()),
            ("frontend-id", &fe.to_string()),
            ("online", "1"),
            ("handle", &devid.to_string()),
            ("mac", &mac),
            ("type", "vif"),
            ("hotplug-status", "connected"),
            ("state", &init),
        ] {
            xs.write(tx, &format!("{}/{k}", p.backend), v.as_bytes())?;
        }
        // Keys written later by either side inherit these permissions.
        Ok(())
    })?;
    Ok(p)
}

/// Resets the frontend directory to a fresh state after its domain died, keeping the
/// toolstack's keys (what re-creating the vif for a new guest would do). A directory that
/// is gone stays gone: a real toolstack removed it with the domain, and writing `state`
/// would leave an orphan node that the next guest's toolstack does not expect.
pub fn reset_frontend<X: XenStore>(xs: &X, p: &VifPaths) -> XsResult<()> {
    let keep = ["backend", "backend-id", "handle", "mac"];
    let tx = netstage_platform::xenstore::NO_TX;
    let Ok(children) = xs.directory(tx, &p.frontend) else {
        return Ok(());
    };
    for c in children {
        if !keep.contains(&c.as_str()) {
            xs.rm(tx, &format!("{}/{c}", p.frontend))?;
        }
    }
    xs.write(
        tx,
        &format!("{}/state", p.frontend),
        XenbusState::Initialising.as_str().as_bytes(),
    )
}

/// Removes both directories of the vif.
pub fn destroy_vif<X: XenStore>(xs: &X, p: &VifPaths) -> XsResult<()> {
    let tx = netstage_platform::xenstore::NO_TX;
    rm_if_present(xs, tx, &p.frontend)?;
    rm_if_present(xs, tx, &p.backend)
}
