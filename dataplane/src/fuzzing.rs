//! What the fuzz targets (`fuzz/`) reach of the data plane's internals: parsers a peer can
//! reach that are not part of the API. Not an API itself: it may change with the internals.

pub use crate::rtcp::{
    Compound, Fir, NACK_MAX, Nack, Packet, REMB_MAX, Remb, ReportBlock, ReportBlocks, SenderReport,
    nack, pli, receiver_report, remb, sender_report,
};
