//! Fetching a packet by grant map: map its pages read-only, copy out, unmap.

use netstage_platform::{DomId, GrantImport, GrantRef, PlatformError};

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

/// Fetches the fragments of one packet granted by `dom` by mapping their pages read-only,
/// copying out, and unmapping. Fails with the first failing grant's status.
pub fn fetch_by_map<P: GrantImport + ?Sized>(
    platform: &P,
    dom: DomId,
    frags: &[Fragment],
    dst: &mut [u8],
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
    let window = platform.map(dom, &grefs, false)?;
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
        window.read_at(i * 4096 + usize::from(f.offset), d)?;
        at = end;
    }
    Ok(())
}
