//! TCP header flag bits (byte 13 of the header), for the kernel's parser and
//! conntrack, the frames the tests build and `sgctl trace`'s flag letters.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
