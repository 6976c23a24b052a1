//! Fetching a packet by grant map: map its pages read-only, copy out, unmap.

use netstage_platform::{DomId, GrantImport, GrantRef, MappedPages, PlatformError};

/// Most fragments one packet is fetched from (a chain's slots are fewer).
pub const MAX_MAP_FRAGMENTS: usize = 32;

/// One fragment of a packet in the peer's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The grant.
    pub gref: GrantRef,
    /// Offset in the granted page.
    pub offset: u16,
    /// Bytes.
    pub len: u16,
}

/// Fetches the fragments of one packet granted by `dom` by mapping their pages read-only
/// into `pages` (one call), copying out, and unmapping them (one call). Fails with the first
/// failing grant's status. `pages` is storage kept from packet to packet.
pub fn fetch_by_map<P: GrantImport + ?Sized>(
    platform: &P,
    dom: DomId,
    frags: &[Fragment],
    dst: &mut [u8],
    pages: &mut MappedPages,
) -> Result<(), PlatformError> {
    if frags.is_empty() {
        return Ok(());
    }
    let mut grefs = arrayvec::ArrayVec::<GrantRef, MAX_MAP_FRAGMENTS>::new();
    for f in frags {
        grefs.try_push(f.gref).map_err(|_| {
            PlatformError::Invalid(format!(
                "{} fragments; one map takes at most {MAX_MAP_FRAGMENTS}",
                frags.len()
            ))
        })?;
    }
    platform.map_each(dom, &grefs, false, pages)?;
    let copied = copy_out(pages, frags, dst);
    pages.unmap();
    copied
}

/// Copies fragment `i` of `frags` out of page `i` of `pages`, one after another into `dst`.
fn copy_out(pages: &MappedPages, frags: &[Fragment], dst: &mut [u8]) -> Result<(), PlatformError> {
    let mut at = 0usize;
    for (i, f) in frags.iter().enumerate() {
        let len = usize::from(f.len);
        let end = at + len;
        let Some(d) = dst.get_mut(at..end) else {
            return Err(PlatformError::Invalid(format!(
                "fragments need {end} bytes, the buffer has {}",
                dst.len()
            )));
        };
        pages.page(i)?.read_at(usize::from(f.offset), d)?;
        at = end;
    }
    Ok(())
}
