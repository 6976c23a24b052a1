//! The Xen device interface `platform::xen` speaks is Linux's, byte for byte: every request
//! structure's size and field offsets and every ioctl number equal what the installed
//! headers (Debian's `libxen-dev`: `/usr/include/xen/sys/{gntalloc,gntdev,evtchn}.h`) give,
//! as a C program compiled against them prints. A missing header fails the test, naming the
//! package.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use netstage_platform::xen::abi::*;

fn from_c() -> HashMap<String, u64> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/xen_devices.c");
    for h in ["gntalloc", "gntdev", "evtchn"] {
        let p = format!("/usr/include/xen/sys/{h}.h");
        assert!(
            std::path::Path::new(&p).exists(),
            "{p} is missing: install Debian's libxen-dev (scripts/test does)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("xen_devices");
    let cc = Command::new("gcc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(src)
        .output()
        .expect("gcc (scripts/test installs it)");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn requests_and_numbers_equal_the_linux_headers() {
    let c = from_c();
    let mut checked = 0;
    let mut eq = |name: &str, rust: u64| {
        assert_eq!(c.get(name), Some(&rust), "{name}");
        checked += 1;
    };
    eq("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF);
    eq("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF);
    eq("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE.into());
    eq("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF);
    eq("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF);
    eq("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY);
    eq(
        "IOCTL_EVTCHN_BIND_INTERDOMAIN",
        IOCTL_EVTCHN_BIND_INTERDOMAIN,
    );
    eq(
        "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
        IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    );
    eq("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND);
    eq("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY);
    eq("GNTCOPY_source_gref", GNTCOPY_SOURCE_GREF.into());
    eq("GNTCOPY_dest_gref", GNTCOPY_DEST_GREF.into());
    let s = |n: usize| n as u64;
    eq(
        "sizeof(ioctl_gntalloc_alloc_gref)",
        s(size_of::<GntallocAllocGref>()),
    );
    eq(
        "offsetof(ioctl_gntalloc_alloc_gref,domid)",
        s(offset_of!(GntallocAllocGref, domid)),
    );
    eq(
        "offsetof(ioctl_gntalloc_alloc_gref,flags)",
        s(offset_of!(GntallocAllocGref, flags)),
    );
    eq(
        "offsetof(ioctl_gntalloc_alloc_gref,count)",
        s(offset_of!(GntallocAllocGref, count)),
    );
    eq(
        "offsetof(ioctl_gntalloc_alloc_gref,index)",
        s(offset_of!(GntallocAllocGref, index)),
    );
    eq(
        "offsetof(ioctl_gntalloc_alloc_gref,gref_ids)",
        s(offset_of!(GntallocAllocGref, gref_ids)),
    );
    eq(
        "sizeof(ioctl_gntalloc_dealloc_gref)",
        s(size_of::<GntallocDeallocGref>()),
    );
    eq(
        "offsetof(ioctl_gntalloc_dealloc_gref,index)",
        s(offset_of!(GntallocDeallocGref, index)),
    );
    eq(
        "offsetof(ioctl_gntalloc_dealloc_gref,count)",
        s(offset_of!(GntallocDeallocGref, count)),
    );
    eq(
        "sizeof(ioctl_gntdev_grant_ref)",
        s(size_of::<GntdevGrantRef>()),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_ref,domid)",
        s(offset_of!(GntdevGrantRef, domid)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_ref,ref)",
        s(offset_of!(GntdevGrantRef, r#ref)),
    );
    eq(
        "sizeof(ioctl_gntdev_map_grant_ref)",
        s(size_of::<GntdevMapGrantRef>()),
    );
    eq(
        "offsetof(ioctl_gntdev_map_grant_ref,count)",
        s(offset_of!(GntdevMapGrantRef, count)),
    );
    eq(
        "offsetof(ioctl_gntdev_map_grant_ref,index)",
        s(offset_of!(GntdevMapGrantRef, index)),
    );
    eq(
        "offsetof(ioctl_gntdev_map_grant_ref,refs)",
        s(offset_of!(GntdevMapGrantRef, refs)),
    );
    eq(
        "sizeof(ioctl_gntdev_unmap_grant_ref)",
        s(size_of::<GntdevUnmapGrantRef>()),
    );
    eq(
        "offsetof(ioctl_gntdev_unmap_grant_ref,index)",
        s(offset_of!(GntdevUnmapGrantRef, index)),
    );
    eq(
        "offsetof(ioctl_gntdev_unmap_grant_ref,count)",
        s(offset_of!(GntdevUnmapGrantRef, count)),
    );
    eq(
        "sizeof(ioctl_gntdev_grant_copy_segment)",
        s(size_of::<GntdevGrantCopySegment>()),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,source)",
        s(offset_of!(GntdevGrantCopySegment, source)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,dest)",
        s(offset_of!(GntdevGrantCopySegment, dest)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,len)",
        s(offset_of!(GntdevGrantCopySegment, len)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,flags)",
        s(offset_of!(GntdevGrantCopySegment, flags)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,status)",
        s(offset_of!(GntdevGrantCopySegment, status)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,source.foreign.ref)",
        s(offset_of!(GntdevCopyForeign, r#ref)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,source.foreign.offset)",
        s(offset_of!(GntdevCopyForeign, offset)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy_segment,source.foreign.domid)",
        s(offset_of!(GntdevCopyForeign, domid)),
    );
    eq(
        "sizeof(ioctl_gntdev_grant_copy)",
        s(size_of::<GntdevGrantCopy>()),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy,count)",
        s(offset_of!(GntdevGrantCopy, count)),
    );
    eq(
        "offsetof(ioctl_gntdev_grant_copy,segments)",
        s(offset_of!(GntdevGrantCopy, segments)),
    );
    eq(
        "sizeof(ioctl_evtchn_bind_interdomain)",
        s(size_of::<EvtchnBindInterdomain>()),
    );
    eq(
        "offsetof(ioctl_evtchn_bind_interdomain,remote_domain)",
        s(offset_of!(EvtchnBindInterdomain, remote_domain)),
    );
    eq(
        "offsetof(ioctl_evtchn_bind_interdomain,remote_port)",
        s(offset_of!(EvtchnBindInterdomain, remote_port)),
    );
    eq(
        "sizeof(ioctl_evtchn_bind_unbound_port)",
        s(size_of::<EvtchnBindUnboundPort>()),
    );
    eq("sizeof(ioctl_evtchn_notify)", s(size_of::<EvtchnPort>()));
    eq("sizeof(ioctl_evtchn_unbind)", s(size_of::<EvtchnPort>()));
    assert_eq!(
        checked,
        c.len(),
        "every value the C program prints is compared"
    );
}
