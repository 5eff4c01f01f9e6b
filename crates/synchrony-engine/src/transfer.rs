//! State transfer's data: what a provider holds for its joiners (a checkpoint, given whole
//! or written in parts while the group goes on) and where a joiner stands (its state
//! buffered whole, or handed on in parts as it comes). The protocol that moves it is the
//! engine's (`StateFetch`, `StateChunk`, ...).

use crate::id::{GroupName, ProcessId, ViewId};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The `total` of a `StateChunk` while the provider's application is still writing its
/// state: the joiner learns the size from the chunks after the last part.
pub(crate) const TOTAL_UNKNOWN: u64 = u64::MAX;

/// A part of a state this process, a joiner, receives as a stream (see
/// [`crate::Engine::stream_state`]), in order. `offset` is where `data` starts in the
/// application's state: one that is not the end of what came before (it is then 0) means the
/// transfer started again from the beginning with another provider, whose state bytes
/// differ: what came before is to be forgotten. Empty `data` is the end: the state is
/// complete, `offset` long (it comes before the `Event::State` that places the state among
/// the group's events; for a join that needed no state, the founder's, it comes alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateData {
    /// The group.
    pub group: GroupName,
    /// The joiner's first view.
    pub view: ViewId,
    /// Where `data` starts in the application's state.
    pub offset: u64,
    /// The bytes (empty at the end).
    pub data: Bytes,
}

/// Where a joiner stands with its initial state.
#[derive(Debug)]
pub(crate) enum JoinState {
    /// It has its state (or founded the group).
    Ready,
    /// It waits for the state of `view` from one of `providers`; `total` is the state's size
    /// once a chunk told it (0 before, [`TOTAL_UNKNOWN`] while the provider still writes).
    /// `resuming`: `buf` came from a provider that failed; the next fetch asks the current
    /// one to go on from there. `asked`: the end of what it asked the provider for so far.
    /// `stream`: the application reads the state in parts (then `buf` holds only the
    /// engine's head of it).
    Waiting {
        view: ViewId,
        providers: Vec<ProcessId>,
        idx: usize,
        buf: Vec<u8>,
        total: u64,
        retry_at: Option<Instant>,
        resuming: bool,
        asked: u64,
        stream: Option<StreamIn>,
    },
}

/// A joiner's state read as a stream: how far it came and how much of it the application
/// has not read yet (the joiner asks for more only while that is under a window).
#[derive(Debug, Default)]
pub(crate) struct StreamIn {
    /// Bytes of the transfer received (the engine's head and the application's state).
    pub(crate) received: u64,
    /// Bytes of the application's state handed on.
    pub(crate) handed: u64,
    /// Bytes handed on that the application has not said it read.
    pub(crate) unread: u64,
}

impl JoinState {
    /// A joiner's fresh state, waiting for `view`'s state from `providers`.
    pub(crate) fn waiting(view: ViewId, providers: Vec<ProcessId>, streamed: bool) -> Self {
        JoinState::Waiting {
            view,
            providers,
            idx: 0,
            buf: Vec::new(),
            total: 0,
            retry_at: None,
            resuming: false,
            asked: 0,
            stream: streamed.then(StreamIn::default),
        }
    }
}

/// A checkpoint's bytes as a joiner receives them: the engine's part (its length first),
/// then the application's state, in the pieces the application gave (one for a state given
/// whole), never copied but for a chunk that straddles two pieces.
#[derive(Debug)]
pub(crate) struct StateBytes {
    pieces: VecDeque<Bytes>,
    /// Where each piece ends in the transfer's bytes.
    ends: VecDeque<usize>,
    /// Where the first piece held starts (the ones before were dropped: every joiner had them).
    start: usize,
    /// The application gave it in parts (see [`crate::Engine::provide_state_part`]).
    streamed: bool,
    /// Every part is here: the length is the total.
    done: bool,
}

impl StateBytes {
    /// A state given whole.
    pub(crate) fn whole(head: Bytes, body: Bytes) -> Self {
        let mut s = Self::streamed(head);
        s.append(body);
        s.streamed = false;
        s.done = true;
        s
    }

    /// A state whose parts come later.
    pub(crate) fn streamed(head: Bytes) -> Self {
        let mut s = Self { pieces: VecDeque::new(), ends: VecDeque::new(), start: 0, streamed: true, done: false };
        s.append(head);
        s
    }

    /// Adds the next part (empty parts are skipped).
    pub(crate) fn append(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.ends.push_back(self.len() + part.len());
            self.pieces.push_back(part);
        }
    }

    /// The last part came.
    pub(crate) fn finish(&mut self) {
        self.done = true;
    }

    pub(crate) fn is_streamed(&self) -> bool {
        self.streamed
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes given so far (the total once done), including those dropped.
    pub(crate) fn len(&self) -> usize {
        self.ends.back().copied().unwrap_or(self.start)
    }

    /// Where the bytes still held start.
    pub(crate) fn held_from(&self) -> usize {
        self.start
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.len() - self.start
    }

    /// What a chunk says the total is.
    pub(crate) fn total(&self) -> u64 {
        if self.done {
            self.len() as u64
        } else {
            TOTAL_UNKNOWN
        }
    }

    /// Forgets the pieces that end at or before `upto`.
    pub(crate) fn drop_before(&mut self, upto: usize) {
        while self.ends.front().is_some_and(|&e| e <= upto) {
            self.start = self.ends.pop_front().expect("a piece");
            self.pieces.pop_front();
        }
    }

    /// The FNV-1a digest of the first `len` bytes (`len <= self.len()`, none dropped).
    pub(crate) fn prefix_digest(&self, len: usize) -> u64 {
        let mut h = crate::hash::Fnv1a::new();
        let mut at = self.start;
        for p in &self.pieces {
            let take = len.saturating_sub(at).min(p.len());
            h.write(&p[..take]);
            at += p.len();
        }
        h.finish()
    }

    /// Bytes `start..end` (`held_from() <= start <= end <= len()`): a slice of one piece, or
    /// a copy of a chunk that straddles pieces.
    pub(crate) fn slice(&self, start: usize, end: usize) -> Bytes {
        if start == end {
            return Bytes::new();
        }
        let i = self.ends.partition_point(|&e| e <= start);
        let piece_start = |i: usize| if i == 0 { self.start } else { self.ends[i - 1] };
        if end <= self.ends[i] {
            let from = piece_start(i);
            return self.pieces[i].slice(start - from..end - from);
        }
        let mut v = Vec::with_capacity(end - start);
        let mut k = i;
        while v.len() < end - start {
            let from = piece_start(k);
            let (a, b) = (start.max(from) - from, end.min(self.ends[k]) - from);
            v.extend_from_slice(&self.pieces[k][a..b]);
            k += 1;
        }
        Bytes::from(v)
    }
}

/// A checkpoint held for joiners of a view.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    /// The engine's part and the application's state; None until it answers the request.
    pub(crate) state: Option<StateBytes>,
    /// The engine's own part, captured at the join point.
    pub(crate) engine_part: Vec<u8>,
    /// A provider still waiting for its own state cannot know its duplicate table yet: it
    /// remembers how many of its unsettled deliveries precede the join point.
    pub(crate) unsettled: Option<usize>,
    /// Joiners that have not said they are done.
    pub(crate) joiners: BTreeSet<ProcessId>,
    /// Of a state written in parts: how far it was sent to each joiner (links are
    /// reliable: it will have what is before, or start again with another provider), and
    /// what a joiner asked for that is not sent yet (from, to).
    pub(crate) sent: BTreeMap<ProcessId, u64>,
    pub(crate) waiting: BTreeMap<ProcessId, (u64, u64)>,
}

impl Checkpoint {
    pub(crate) fn new(engine_part: Vec<u8>, unsettled: Option<usize>, joiners: BTreeSet<ProcessId>) -> Self {
        Self { state: None, engine_part, unsettled, joiners, sent: BTreeMap::new(), waiting: BTreeMap::new() }
    }

    /// The engine's part as it goes first in the transfer (its length first).
    pub(crate) fn head(&self) -> Bytes {
        let mut head = Vec::with_capacity(4 + self.engine_part.len());
        head.extend_from_slice(&(self.engine_part.len() as u32).to_le_bytes());
        head.extend_from_slice(&self.engine_part);
        Bytes::from(head)
    }

    /// A state written in parts keeps only what is not sent to every joiner yet.
    pub(crate) fn drop_sent(&mut self) {
        let Some(state) = self.state.as_mut().filter(|s| s.is_streamed()) else { return };
        let upto = self.joiners.iter().map(|j| self.sent.get(j).copied().unwrap_or(0)).min().unwrap_or(0);
        state.drop_before(usize::try_from(upto).unwrap_or(usize::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::StateBytes;
    use bytes::Bytes;

    #[test]
    fn state_bytes_slice_like_one_buffer_without_copying_the_state() {
        let (head, body) = (Bytes::from_static(b"0123"), Bytes::from(b"abcdefgh".to_vec()));
        let s = StateBytes::whole(head.clone(), body.clone());
        let whole: Vec<u8> = [&head[..], &body[..]].concat();
        assert_eq!(s.len(), whole.len());
        for start in 0..whole.len() {
            for end in start..=whole.len() {
                assert_eq!(&s.slice(start, end)[..], &whole[start..end], "{start}..{end}");
            }
        }
        // A chunk inside the state is a view of the application's buffer.
        assert_eq!(s.slice(6, 10).as_ptr(), body[2..].as_ptr());
        assert_eq!(s.prefix_digest(7), crate::hash::fnv1a(&whole[..7]));
    }

    #[test]
    fn a_state_written_in_parts_slices_across_them_and_drops_what_was_fetched() {
        let mut s = StateBytes::streamed(Bytes::from_static(b"hh"));
        for part in ["abc", "", "d", "efgh"] {
            s.append(Bytes::from(part));
        }
        assert_eq!(s.total(), super::TOTAL_UNKNOWN);
        s.finish();
        let whole = b"hhabcdefgh";
        assert_eq!(s.total(), whole.len() as u64);
        for start in 0..whole.len() {
            for end in start..=whole.len() {
                assert_eq!(&s.slice(start, end)[..], &whole[start..end], "{start}..{end}");
            }
        }
        s.drop_before(6);
        assert_eq!((s.held_from(), s.held()), (6, 4));
        assert_eq!(&s.slice(6, 10)[..], b"efgh");
        assert_eq!(&s.slice(7, 9)[..], b"fg");
    }
}
