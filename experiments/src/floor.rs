//! The rings without the queue framework: the steps of the raw streams' writer and reader,
//! with or without netif's TX ring beside the data ring. Used by the harness's raw 64-byte
//! streams (one process per end) and by `netif-floor` (two threads).
//!
//! With a TX ring each record gets a request (one slot, the record's size, a free id), and
//! the reader answers each request in its slot, as netif does; the writer reaps the answers
//! and frees their ids. Nothing is validated, counted or checked beyond what the ring types
//! do themselves: the rates are what the wire protocol's shape allows, an upper bound on the
//! designs' small-packet rates on the same machine.

use netstage_ring::flex::{FlexConsumer, FlexProducer};
use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing, NETIF_RSP_OKAY};
use netstage_ring::sring::{BackRing, FrontRing};

/// The writer's end of netif's TX ring: the ring and the request ids not in flight.
pub struct TxRequests {
    ring: FrontRing<TxRing>,
    free_ids: Vec<u16>,
}

impl TxRequests {
    /// The writer's end of `ring`, every id of the ring's size free.
    pub fn new(ring: FrontRing<TxRing>) -> TxRequests {
        let ids = u16::try_from(ring.size()).unwrap_or(u16::MAX);
        TxRequests {
            ring,
            free_ids: (0..ids).collect(),
        }
    }

    fn has_room(&self) -> bool {
        self.ring.free_requests() > 0 && !self.free_ids.is_empty()
    }

    fn put(&mut self, size: u16) -> anyhow::Result<()> {
        let id = self
            .free_ids
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no free request id"))?;
        let req = NetifTxRequest {
            gref: 0,
            offset: 0,
            flags: 0,
            id,
            size,
        };
        Ok(self.ring.put_request(&req)?)
    }

    /// Publishes the requests put since the last call, then reaps the answers and frees
    /// their ids.
    pub fn publish_and_reap(&mut self, put: bool) -> anyhow::Result<()> {
        if put {
            self.ring.push_requests()?;
        }
        self.ring.refresh_responses()?;
        while let Some(r) = self.ring.take_response()? {
            self.free_ids.push(r.id);
        }
        Ok(())
    }
}

/// Stages up to `burst` copies of `record` on the data ring (each with a request when `tx`
/// is given), unpublished; how many.
pub fn stage_burst(
    prod: &mut FlexProducer,
    mut tx: Option<&mut TxRequests>,
    record: &[u8],
    burst: u32,
) -> anyhow::Result<u32> {
    let size = u16::try_from(record.len())?;
    let mut n = 0;
    while n < burst {
        if tx.as_ref().is_some_and(|t| !t.has_room()) || prod.stage(record)?.is_none() {
            break;
        }
        if let Some(t) = tx.as_mut() {
            t.put(size)?;
        }
        n += 1;
    }
    Ok(n)
}

/// Reads up to `burst` records of `buf.len()` bytes off the data ring alone; how many.
pub fn take_records(cons: &mut FlexConsumer, buf: &mut [u8], burst: u32) -> anyhow::Result<u32> {
    let mut n = 0;
    while n < burst && cons.read(buf)? > 0 {
        n += 1;
    }
    Ok(n)
}

/// Takes up to `burst` requests off `rx`, reads each one's record (up to `buf.len()`
/// bytes) off the data ring and answers the request in its slot (unpublished); how many.
pub fn take_requests(
    rx: &mut BackRing<TxRing>,
    cons: &mut FlexConsumer,
    buf: &mut [u8],
    burst: u32,
) -> anyhow::Result<u32> {
    rx.refresh_requests()?;
    let mut n = 0;
    while n < burst {
        let Some(req) = rx.take_request()? else {
            break;
        };
        let len = usize::from(req.size).min(buf.len());
        cons.read_exact(&mut buf[..len])?;
        rx.put_response(&NetifTxResponse {
            id: req.id,
            status: NETIF_RSP_OKAY,
        })?;
        n += 1;
    }
    Ok(n)
}
