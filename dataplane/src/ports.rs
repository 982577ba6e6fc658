//! Media port allocation: even RTP ports with RTCP on the odd port above, from `--rtp-ports`.
//! The odd port is reserved with its pair either way, but bound only for a leg that may need
//! it: one whose peer multiplexes RTCP (RFC 5761) holds one socket, not two.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::api::Error;

/// Socket buffer size asked for every media socket: the defaults lose packets in bursts.
const SOCKET_BUFFER: usize = 4 << 20;

/// Free RTP ports, handed out oldest-freed first so that a port just released is reused last.
#[derive(Debug)]
pub(crate) struct PortPool {
    free: VecDeque<u16>,
}

impl PortPool {
    pub(crate) fn new(lo: u16, hi: u16) -> Result<Self, Error> {
        let first = lo.saturating_add(lo % 2);
        if hi < first.saturating_add(1) {
            return Err(Error::Config(format!(
                "rtp port range {lo}-{hi} holds no RTP/RTCP pair"
            )));
        }
        let free = (first..hi).step_by(2).collect();
        Ok(PortPool { free })
    }

    /// Takes a free pair and binds its RTP socket, and its RTCP socket when `rtcp`, skipping
    /// ports another process holds.
    pub(crate) fn bind(
        &mut self,
        ip: IpAddr,
        rtcp: bool,
    ) -> Result<(u16, UdpSocket, Option<UdpSocket>), Error> {
        for _ in 0..self.free.len() {
            let Some(port) = self.free.pop_front() else {
                break;
            };
            let rtp = bind(ip, port);
            let rtcp_sock = if rtcp {
                bind(ip, port + 1).map(Some)
            } else {
                Ok(None)
            };
            match (rtp, rtcp_sock) {
                (Ok(rtp), Ok(rtcp)) => return Ok((port, rtp, rtcp)),
                _ => self.free.push_back(port),
            }
        }
        Err(Error::PortsExhausted)
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.free.push_back(port);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.len()
    }
}

fn bind(ip: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_yields_even_rtp_ports() {
        let pool = PortPool::new(20001, 20010).unwrap();
        assert_eq!(
            pool.free.iter().copied().collect::<Vec<_>>(),
            vec![20002, 20004, 20006, 20008]
        );
    }

    #[test]
    fn range_without_pair_is_rejected() {
        assert!(PortPool::new(20000, 20000).is_err());
    }

    #[test]
    fn released_port_goes_to_the_back() {
        let mut pool = PortPool::new(20000, 20005).unwrap();
        let first = pool.free.pop_front().unwrap();
        pool.release(first);
        assert_eq!(pool.free.back(), Some(&first));
        assert_eq!(pool.len(), 3);
    }
}
