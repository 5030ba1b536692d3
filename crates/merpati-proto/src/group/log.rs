//! A group's membership log (protocol §15.2): entries checked as they come, waiting for missing
//! parents, and the state folded from the set of entries, the same at every member holding the
//! same set whatever order the entries arrived in.

use std::collections::{BTreeMap, HashMap};

use super::entry::{Action, Entry, EntryError, EntryHash, GroupId, Role};
use crate::identity::IdentityPublic;
use crate::time::Timestamp;

/// The most entries a log holds.
pub const MAX_LOG_ENTRIES: usize = 4096;
/// The most entries waiting for their parents.
pub const MAX_PENDING: usize = 256;
/// The most of them by authors the log does not name.
pub const MAX_PENDING_UNNAMED: usize = 16;
/// How long an entry waits for its parents.
pub const PENDING_LIFETIME: u64 = 7 * Timestamp::DAY;
/// The most members of a group, the owner included.
pub const MAX_MEMBERS: usize = 100;

/// Why an entry was refused. A refused entry changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The entry itself is bad (layout, signature).
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// It belongs to another group.
    #[error("the entry is of another group")]
    OtherGroup,
    /// Its number is not one more than its parents' largest.
    #[error("the entry's number does not follow its parents")]
    WrongNumber,
    /// A second genesis.
    #[error("a group has one genesis")]
    SecondGenesis,
    /// Its author may not do this, in the state the entry's own past gives.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// The log, or the entries waiting for their parents, are full.
    #[error("the group's log is full")]
    Full,
}

/// What adding an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Taken, with any waiting entries it let in: their hashes, in the order they were taken.
    New(Vec<EntryHash>),
    /// Already in the log (or already waiting): nothing changed.
    Known,
    /// Kept until its parents arrive.
    Waiting,
}

/// A member, as the fold gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name the entry that added them gave.
    pub name: String,
    /// Their role.
    pub role: Role,
}

/// The group as a log's entries make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The group's name.
    pub name: String,
    /// The owner (always a member and an admin).
    pub owner: IdentityPublic,
    /// The members other than the owner, by identity.
    pub members: BTreeMap<IdentityPublic, Member>,
}

impl State {
    /// `identity`'s role, if a member (the owner is an admin).
    pub fn role(&self, identity: &IdentityPublic) -> Option<Role> {
        if *identity == self.owner {
            return Some(Role::Admin);
        }
        self.members.get(identity).map(|m| m.role)
    }

    /// How many members, the owner included.
    pub fn len(&self) -> usize {
        self.members.len() + 1
    }

    /// Never empty: the owner is a member.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A set of entry positions.
#[derive(Clone, Default, Debug)]
struct Positions(Vec<u64>);

impl Positions {
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, i: usize) {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn union(&mut self, other: &Positions) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn all(count: usize) -> Positions {
        let mut all = Positions::default();
        for i in 0..count {
            all.insert(i);
        }
        all
    }
}

/// A group's membership log.
#[derive(Debug, Clone)]
pub struct Log {
    group_id: GroupId,
    /// Entries in the order they were taken: parents always before children; 0 is the genesis.
    entries: Vec<Entry>,
    hashes: Vec<EntryHash>,
    positions: HashMap<EntryHash, usize>,
    /// Each entry's strict ancestors, by position.
    ancestors: Vec<Positions>,
    /// Entries waiting for parents, with when they arrived.
    pending: Vec<(Entry, Timestamp)>,
}

impl Log {
    /// A log from a verified genesis.
    pub fn new(genesis: Entry) -> Result<Self, LogError> {
        if !matches!(genesis.action, Action::Create { .. }) || !genesis.parents.is_empty() {
            return Err(LogError::NotAllowed("a log starts with its genesis"));
        }
        genesis.verify()?;
        let hash = genesis.hash();
        Ok(Log {
            group_id: genesis.group_id_of_genesis(),
            entries: vec![genesis],
            hashes: vec![hash],
            positions: HashMap::from([(hash, 0)]),
            ancestors: vec![Positions::default()],
            pending: Vec::new(),
        })
    }

    /// The group's id.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// The owner.
    pub fn owner(&self) -> IdentityPublic {
        self.entries[0].author
    }

    /// How many entries the log holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never empty: the genesis is there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How many entries wait for their parents.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// The entries, parents before children.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries no other entry cites, sorted: what a new entry cites (at most four of them).
    pub fn heads(&self) -> Vec<EntryHash> {
        let mut cited = Positions::default();
        for ancestors in &self.ancestors {
            cited.union(ancestors);
        }
        let mut heads: Vec<EntryHash> =
            (0..self.entries.len()).filter(|i| !cited.contains(*i)).map(|i| self.hashes[i]).collect();
        heads.sort();
        heads
    }

    /// The parents and number of a new entry written after this log: its heads, the four with
    /// the largest numbers when there are more (the others stay heads, cited by a later entry).
    pub fn next_parents(&self) -> (Vec<EntryHash>, u32) {
        let mut heads: Vec<(u32, EntryHash)> =
            self.heads().into_iter().map(|h| (self.entries[self.positions[&h]].n, h)).collect();
        heads.sort_by(|a, b| b.cmp(a));
        heads.truncate(super::entry::MAX_PARENTS);
        let n = heads.iter().map(|(n, _)| *n).max().unwrap_or(0).saturating_add(1);
        let mut parents: Vec<EntryHash> = heads.into_iter().map(|(_, h)| h).collect();
        parents.sort();
        (parents, n)
    }

    /// The largest entry number in the log (a new entry after all heads gets one more).
    pub fn last_n(&self) -> u32 {
        self.entries.iter().map(|e| e.n).max().unwrap_or(0)
    }

    /// The group as all the log's entries make it.
    pub fn state(&self) -> State {
        self.fold(&Positions::all(self.entries.len()))
    }

    /// Takes `entry`, arrived at `now`, if it is valid in the state of its own past; an entry
    /// whose parents are not all here waits for them (up to [`PENDING_LIFETIME`]).
    pub fn add(&mut self, entry: Entry, now: Timestamp) -> Result<Added, LogError> {
        self.pending.retain(|(_, at)| now.since(*at) < PENDING_LIFETIME);
        let hash = entry.hash();
        if self.positions.contains_key(&hash) || self.pending.iter().any(|(e, _)| e.hash() == hash) {
            return Ok(Added::Known);
        }
        self.check_alone(&entry)?;
        if !entry.parents.iter().all(|p| self.positions.contains_key(p)) {
            // Anyone can sign: entries by someone the log does not name (a member whose `Add`
            // has not arrived yet, or a stranger) get a few of the waiting places only, so
            // junk cannot crowd out the entries of those it does name.
            let strangers = self.pending.iter().filter(|(e, _)| !self.names(&e.author)).count();
            if self.pending.len() >= MAX_PENDING
                || (!self.names(&entry.author) && strangers >= MAX_PENDING_UNNAMED)
            {
                return Err(LogError::Full);
            }
            self.pending.push((entry, now));
            return Ok(Added::Waiting);
        }
        self.insert(entry)?;
        let mut taken = vec![hash];
        // Waiting entries whose parents are all here now, until none is left to take.
        while let Some(at) =
            self.pending.iter().position(|(e, _)| e.parents.iter().all(|p| self.positions.contains_key(p)))
        {
            let (waiting, _) = self.pending.swap_remove(at);
            let waiting_hash = waiting.hash();
            if self.insert(waiting).is_ok() {
                taken.push(waiting_hash);
            }
        }
        Ok(Added::New(taken))
    }

    /// Whether the group had, has or is about to have `identity`: the owner, the subject of an
    /// entry here, or the member a waiting `Add` by someone named here adds.
    fn names(&self, identity: &IdentityPublic) -> bool {
        self.names_here(identity)
            || self.pending.iter().any(|(e, _)| {
                matches!(&e.action, Action::Add { member, .. } if member == identity)
                    && self.names_here(&e.author)
            })
    }

    /// Whether `identity` is the owner or the subject of an entry of the log.
    fn names_here(&self, identity: &IdentityPublic) -> bool {
        *identity == self.owner()
            || self.entries.iter().any(|e| e.action.subject(&e.author).as_ref() == Some(identity))
    }

    /// What can be checked without the entry's parents: group, layout, signature.
    fn check_alone(&self, entry: &Entry) -> Result<(), LogError> {
        if matches!(entry.action, Action::Create { .. }) {
            return Err(LogError::SecondGenesis);
        }
        if entry.group_id != self.group_id {
            return Err(LogError::OtherGroup);
        }
        entry.verify()?;
        Ok(())
    }

    /// Checks an entry whose parents are all here against the state of its past, and takes it.
    fn insert(&mut self, entry: Entry) -> Result<(), LogError> {
        if self.entries.len() >= MAX_LOG_ENTRIES {
            return Err(LogError::Full);
        }
        let parents: Vec<usize> =
            entry.parents.iter().filter_map(|p| self.positions.get(p).copied()).collect();
        let expected = parents.iter().map(|&p| self.entries[p].n).max().unwrap_or(0).saturating_add(1);
        if entry.n != expected {
            return Err(LogError::WrongNumber);
        }
        let mut past = Positions::default();
        for &p in &parents {
            past.insert(p);
            past.union(&self.ancestors[p]);
        }
        allowed(&entry, &self.fold(&past))?;
        let hash = entry.hash();
        self.positions.insert(hash, self.entries.len());
        self.hashes.push(hash);
        self.ancestors.push(past);
        self.entries.push(entry);
        Ok(())
    }

    /// Whether neither of two entries descends from the other.
    fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.ancestors[a].contains(b) && !self.ancestors[b].contains(a)
    }

    /// The owner's entries within `set` that remove or demote an admin: the entry, and whom.
    fn cuts(&self, set: &Positions) -> Vec<(usize, IdentityPublic)> {
        let owner = self.owner();
        (0..self.entries.len())
            .filter(|j| set.contains(*j) && self.entries[*j].author == owner)
            .filter_map(|j| match &self.entries[j].action {
                Action::Remove { member } | Action::SetRole { member, role: Role::Member } => {
                    Some((j, *member))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether the entry at `i` is void: an admin's act (adding, removing, renaming) concurrent
    /// with one of the owner's `cuts` of its author. The owner's entries, and a member's own
    /// `Leave`, are never void.
    fn void(&self, i: usize, cuts: &[(usize, IdentityPublic)]) -> bool {
        let entry = &self.entries[i];
        let admins_act =
            matches!(entry.action, Action::Add { .. } | Action::Remove { .. } | Action::Rename { .. });
        admins_act
            && entry.author != self.owner()
            && cuts.iter().any(|&(j, whom)| whom == entry.author && self.concurrent(i, j))
    }

    /// The state the entries at the positions in `set` make (a set closed under ancestry).
    fn fold(&self, set: &Positions) -> State {
        let cuts = self.cuts(set);
        let live: Vec<usize> =
            (0..self.entries.len()).filter(|i| set.contains(*i) && !self.void(*i, &cuts)).collect();
        // The causally latest of `candidates`: those no other candidate descends from, that is,
        // those in none of the candidates' ancestor sets (an entry is not its own ancestor).
        let latest = |candidates: &[usize]| -> Vec<usize> {
            let mut below = Positions::default();
            for &k in candidates {
                below.union(&self.ancestors[k]);
            }
            candidates.iter().copied().filter(|&i| !below.contains(i)).collect()
        };
        let lowest_hash = |among: &[usize]| among.iter().copied().min_by_key(|&i| self.hashes[i]);

        let naming: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| matches!(self.entries[i].action, Action::Create { .. } | Action::Rename { .. }))
            .collect();
        let name = lowest_hash(&latest(&naming))
            .and_then(|i| match &self.entries[i].action {
                Action::Create { name, .. } | Action::Rename { name } => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();

        let mut about: BTreeMap<IdentityPublic, Vec<usize>> = BTreeMap::new();
        for &i in &live {
            let entry = &self.entries[i];
            if let Some(subject) = entry.action.subject(&entry.author)
                && subject != self.owner()
            {
                about.entry(subject).or_default().push(i);
            }
        }
        let mut members = BTreeMap::new();
        for (subject, entries) in about {
            let frontier = latest(&entries);
            let gone = frontier
                .iter()
                .any(|&i| matches!(self.entries[i].action, Action::Remove { .. } | Action::Leave));
            if gone || frontier.is_empty() {
                continue;
            }
            // The lower role wins among concurrent entries; an `Add` makes a plain member.
            let role = frontier
                .iter()
                .map(|&i| match self.entries[i].action {
                    Action::SetRole { role, .. } => role,
                    _ => Role::Member,
                })
                .min()
                .unwrap_or(Role::Member);
            let adds: Vec<usize> = entries
                .iter()
                .copied()
                .filter(|&i| matches!(self.entries[i].action, Action::Add { .. }))
                .collect();
            let name = lowest_hash(&latest(&adds))
                .and_then(|i| match &self.entries[i].action {
                    Action::Add { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            members.insert(subject, Member { name, role });
        }
        State { name, owner: self.owner(), members }
    }
}

/// Whether `entry`'s author may do what it does in `state`, the state of the entry's own past.
fn allowed(entry: &Entry, state: &State) -> Result<(), LogError> {
    let author = state.role(&entry.author);
    let is_owner = entry.author == state.owner;
    match &entry.action {
        Action::Create { .. } => Err(LogError::SecondGenesis),
        Action::Add { member, .. } => {
            require(author == Some(Role::Admin), "only an admin adds members")?;
            require(state.role(member).is_none(), "already a member")?;
            require(state.len() < MAX_MEMBERS, "the group is full")
        }
        Action::Remove { member } => {
            require(author == Some(Role::Admin), "only an admin removes members")?;
            require(*member != state.owner, "the owner cannot be removed")?;
            let role = state.role(member).ok_or(LogError::NotAllowed("not a member"))?;
            require(role == Role::Member || is_owner, "only the owner removes an admin")
        }
        Action::Leave => {
            require(author.is_some(), "not a member")?;
            require(!is_owner, "the owner cannot leave")
        }
        Action::SetRole { member, .. } => {
            require(is_owner, "only the owner sets roles")?;
            require(*member != state.owner, "the owner's role is fixed")?;
            require(state.role(member).is_some(), "not a member")
        }
        Action::Rename { .. } => require(author == Some(Role::Admin), "only an admin renames the group"),
    }
}

fn require(condition: bool, why: &'static str) -> Result<(), LogError> {
    if condition { Ok(()) } else { Err(LogError::NotAllowed(why)) }
}
