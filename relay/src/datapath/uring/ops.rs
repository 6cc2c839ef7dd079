//! What a completion is about: an operation, a generation (telling a
//! socket from a later one in the same slot) and an index, packed into
//! `user_data`.

/// What a completion is about: the top byte of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    RecvListener = 1,
    RecvRelay = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
    Accept = 6,
    RecvConn = 7,
    SendConn = 8,
}

pub(super) fn user_data(op: Op, generation: u32, index: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0x00FF_FFFF) << 32 | u64::from(index)
}

pub(super) fn decode(user_data: u64) -> (Option<Op>, u32, u32) {
    let op = match user_data >> 56 {
        1 => Some(Op::RecvListener),
        2 => Some(Op::RecvRelay),
        3 => Some(Op::Send),
        4 => Some(Op::Wake),
        5 => Some(Op::Cancel),
        6 => Some(Op::Accept),
        7 => Some(Op::RecvConn),
        8 => Some(Op::SendConn),
        _ => None,
    };
    let generation = ((user_data >> 32) & 0x00FF_FFFF) as u32;
    (op, generation, (user_data & 0xFFFF_FFFF) as u32)
}
