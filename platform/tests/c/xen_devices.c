/* Prints the sizes, offsets and ioctl numbers of Linux's Xen device interface as the
 * installed headers define them, one "name value" per line, for platform/tests/xen_abi.rs. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/sys/evtchn.h>
#include <xen/sys/gntalloc.h>
#include <xen/sys/gntdev.h>

#define V(x) printf("%s %llu\n", #x, (unsigned long long)(x))
#define S(t) printf("sizeof(%s) %zu\n", #t, sizeof(struct t))
#define O(t, f) printf("offsetof(%s,%s) %zu\n", #t, #f, offsetof(struct t, f))

int main(void)
{
    V(IOCTL_GNTALLOC_ALLOC_GREF);
    V(IOCTL_GNTALLOC_DEALLOC_GREF);
    V(GNTALLOC_FLAG_WRITABLE);
    V(IOCTL_GNTDEV_MAP_GRANT_REF);
    V(IOCTL_GNTDEV_UNMAP_GRANT_REF);
    V(IOCTL_GNTDEV_GRANT_COPY);
    V(IOCTL_EVTCHN_BIND_INTERDOMAIN);
    V(IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    V(IOCTL_EVTCHN_UNBIND);
    V(IOCTL_EVTCHN_NOTIFY);
    S(ioctl_gntalloc_alloc_gref);
    O(ioctl_gntalloc_alloc_gref, domid);
    O(ioctl_gntalloc_alloc_gref, flags);
    O(ioctl_gntalloc_alloc_gref, count);
    O(ioctl_gntalloc_alloc_gref, index);
    O(ioctl_gntalloc_alloc_gref, gref_ids);
    S(ioctl_gntalloc_dealloc_gref);
    O(ioctl_gntalloc_dealloc_gref, index);
    O(ioctl_gntalloc_dealloc_gref, count);
    S(ioctl_gntdev_grant_ref);
    O(ioctl_gntdev_grant_ref, domid);
    O(ioctl_gntdev_grant_ref, ref);
    S(ioctl_gntdev_map_grant_ref);
    O(ioctl_gntdev_map_grant_ref, count);
    O(ioctl_gntdev_map_grant_ref, index);
    O(ioctl_gntdev_map_grant_ref, refs);
    S(ioctl_gntdev_unmap_grant_ref);
    O(ioctl_gntdev_unmap_grant_ref, index);
    O(ioctl_gntdev_unmap_grant_ref, count);
    S(ioctl_gntdev_grant_copy_segment);
    O(ioctl_gntdev_grant_copy_segment, source);
    O(ioctl_gntdev_grant_copy_segment, dest);
    O(ioctl_gntdev_grant_copy_segment, len);
    O(ioctl_gntdev_grant_copy_segment, flags);
    O(ioctl_gntdev_grant_copy_segment, status);
    O(ioctl_gntdev_grant_copy_segment, source.foreign.ref);
    O(ioctl_gntdev_grant_copy_segment, source.foreign.offset);
    O(ioctl_gntdev_grant_copy_segment, source.foreign.domid);
    V(GNTCOPY_source_gref);
    V(GNTCOPY_dest_gref);
    S(ioctl_gntdev_grant_copy);
    O(ioctl_gntdev_grant_copy, count);
    O(ioctl_gntdev_grant_copy, segments);
    S(ioctl_evtchn_bind_interdomain);
    O(ioctl_evtchn_bind_interdomain, remote_domain);
    O(ioctl_evtchn_bind_interdomain, remote_port);
    S(ioctl_evtchn_bind_unbound_port);
    S(ioctl_evtchn_notify);
    S(ioctl_evtchn_unbind);
    return 0;
}
