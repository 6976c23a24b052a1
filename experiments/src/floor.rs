//! The rings without the queue framework: the steps of the raw streams' writer and reader,
//! with or without netif's TX ring beside the data ring, as the harness's raw 64-byte
//! streams run them (one process per end). `benches/benches/ring.rs`'s `netif` group times
//! the same protocol between two threads.
//!
//! With a TX ring each record gets a request (one slot, the record's size, a free id), and
//! the reader answers each request in its slot, as netif does; the writer reaps the answers
//! and frees their ids. Nothing is validated, counted or checked beyond what the ring types
//! do themselves: the rates are what the wire protocol's shape allows, an upper bound on the
//! designs' small-packet rates on the same machine (the floor of what a packet costs,
//! whence the module's name).

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

/// Takes up to `burst` requests off `rx`, reads each one's record off the data ring into
/// `buf` and answers the request in its slot (unpublished); how many, and their bytes. A
/// record larger than `buf` is an error: the reader could not follow the data ring.
pub fn take_requests(
    rx: &mut BackRing<TxRing>,
    cons: &mut FlexConsumer,
    buf: &mut [u8],
    burst: u32,
) -> anyhow::Result<(u32, usize)> {
    rx.refresh_requests()?;
    let (mut n, mut bytes) = (0, 0);
    while n < burst {
        let Some(req) = rx.take_request()? else {
            break;
        };
        let len = usize::from(req.size);
        let room = buf.len();
        let dst = buf
            .get_mut(..len)
            .ok_or_else(|| anyhow::anyhow!("a {len}-byte record; the reader takes {room}"))?;
        cons.read_exact(dst)?;
        rx.put_response(&NetifTxResponse {
            id: req.id,
            status: NETIF_RSP_OKAY,
        })?;
        n += 1;
        bytes += len;
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstage_ring::flex::{self, End};
    use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

    /// A data ring of order 0 and a TX ring, both ends of each, in process memory.
    fn rings() -> (FlexProducer, FlexConsumer, TxRequests, BackRing<TxRing>) {
        let intf = SharedMem::new_zeroed(XEN_PAGE_SIZE);
        let data = SharedMem::new_zeroed(XEN_PAGE_SIZE);
        flex::init_intf(&intf, 0, &[0]).unwrap();
        let (prod, _) = flex::open(End::Frontend, &intf, &data, 0).unwrap();
        let (_, cons) = flex::open(End::Backend, &intf, &data, 0).unwrap();
        let tx = SharedMem::new_zeroed(XEN_PAGE_SIZE);
        let front = FrontRing::<TxRing>::init(tx.clone()).unwrap();
        let back = BackRing::<TxRing>::attach(tx).unwrap();
        (prod, cons, TxRequests::new(front), back)
    }

    /// Each record staged gets a request; the reader reads each record and answers it, and
    /// reaping frees every id again.
    #[test]
    fn records_go_with_requests_and_come_back_answered() {
        let (mut prod, mut cons, mut tx, mut rx) = rings();
        let record = [7u8; 64];
        assert_eq!(
            stage_burst(&mut prod, Some(&mut tx), &record, 3).unwrap(),
            3
        );
        prod.publish().unwrap();
        tx.publish_and_reap(true).unwrap();
        assert_eq!(tx.free_ids.len(), 253);
        let mut buf = [0u8; 64];
        assert_eq!(
            take_requests(&mut rx, &mut cons, &mut buf, 64).unwrap(),
            (3, 192)
        );
        assert_eq!(buf, record);
        rx.push_responses().unwrap();
        tx.publish_and_reap(false).unwrap();
        assert_eq!(tx.free_ids.len(), 256);
    }

    /// A burst stops where the data ring is full (order 0: half a page each way).
    #[test]
    fn a_burst_stops_at_a_full_data_ring() {
        let (mut prod, mut cons, _, _) = rings();
        let fits = (flex::flex_ring_size(0) / 64) as u32;
        assert_eq!(stage_burst(&mut prod, None, &[1u8; 64], 100).unwrap(), fits);
        prod.publish().unwrap();
        let (mut buf, mut read) = ([0u8; 64], 0);
        while cons.read(&mut buf).unwrap() > 0 {
            read += 1;
        }
        assert_eq!(read, fits);
    }

    /// A record larger than the reader's buffer is an error, not a silent loss of step.
    #[test]
    fn a_record_larger_than_the_readers_buffer_is_refused() {
        let (mut prod, mut cons, mut tx, mut rx) = rings();
        assert_eq!(
            stage_burst(&mut prod, Some(&mut tx), &[1u8; 100], 1).unwrap(),
            1
        );
        prod.publish().unwrap();
        tx.publish_and_reap(true).unwrap();
        let err = take_requests(&mut rx, &mut cons, &mut [0u8; 64], 1).unwrap_err();
        assert!(err.to_string().contains("a 100-byte record"), "{err}");
    }
}
