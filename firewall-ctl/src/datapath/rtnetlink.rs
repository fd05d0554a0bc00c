//! One rtnetlink request and its answers, in the current network namespace:
//! what `hooks` asks of a link and `clsact` asks and tells of tc.
use std::io;

use anyhow::Context as _;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Sends `message` with `flags` (on top of NLM_F_REQUEST and NLM_F_ACK)
/// and returns the messages the kernel answers with: one for a get, all of
/// a dump (`NLM_F_DUMP`), none for a change it acknowledged. A refusal is
/// an `io::Error` of its errno (in the chain, for `errno`).
pub fn request(message: RouteNetlinkMessage, flags: u16) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).context("sending the netlink request")?;

    let mut answers = Vec::new();
    let mut received = vec![0; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut received[..], 0).context("receiving the netlink answer")?;
        let mut at = 0;
        while at < size {
            let message: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&received[at..size]).context("parsing the netlink answer")?;
            let length = message.header.length as usize;
            match message.payload {
                // A get's one answer (its ACK follows), or one of a dump's.
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io().into()),
                // The ACK (error 0) ends a request; DONE ends a dump.
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(answers),
                _ => {}
            }
            if length == 0 {
                break;
            }
            at += (length + 3) & !3;
        }
    }
}

/// The errno of an error from [`request`], if it is one.
pub fn errno(error: &anyhow::Error) -> Option<i32> {
    error.chain().find_map(|e| e.downcast_ref::<io::Error>()).and_then(io::Error::raw_os_error)
}
