//! One entry of a group's membership log (protocol §15.1): its canonical encoding, its
//! signature by the author's identity key, and its hash, by which other entries cite it.

use std::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::kdf::{self, label};
use crate::time::Timestamp;

/// The most parents an entry cites.
pub const MAX_PARENTS: usize = 4;
/// The longest group or member name, in bytes (as a display name).
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// A group's id: `H("NDR1/group-id", genesis)[..16]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub [u8; 16]);

/// An entry's name: `H("NDR1/group-entry-hash", entry)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash(pub [u8; 32]);

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Sends and receives.
    Member = 0,
    /// Also adds and removes members and renames the group.
    Admin = 1,
}

/// What an entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The genesis: the group's name, and a random nonce that makes the id unique.
    Create {
        /// The group's name.
        name: String,
        /// 16 random bytes.
        nonce: [u8; 16],
    },
    /// Adds a member, under the name the adding admin knows them by.
    Add {
        /// The new member.
        member: IdentityPublic,
        /// Their name.
        name: String,
    },
    /// Removes a member.
    Remove {
        /// The member.
        member: IdentityPublic,
    },
    /// The author leaves.
    Leave,
    /// Sets a member's role (the owner only).
    SetRole {
        /// The member.
        member: IdentityPublic,
        /// Their new role.
        role: Role,
    },
    /// Renames the group.
    Rename {
        /// The new name.
        name: String,
    },
}

impl Action {
    fn tag(&self) -> u8 {
        match self {
            Action::Create { .. } => 1,
            Action::Add { .. } => 2,
            Action::Remove { .. } => 3,
            Action::Leave => 4,
            Action::SetRole { .. } => 5,
            Action::Rename { .. } => 6,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Action::Create { name, nonce } => {
                w.bytes_u8(name.as_bytes()).raw(nonce);
            }
            Action::Add { member, name } => {
                w.raw(member.as_bytes()).bytes_u8(name.as_bytes());
            }
            Action::Remove { member } => {
                w.raw(member.as_bytes());
            }
            Action::Leave => {}
            Action::SetRole { member, role } => {
                w.raw(member.as_bytes()).u8(*role as u8);
            }
            Action::Rename { name } => {
                w.bytes_u8(name.as_bytes());
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, EntryError> {
        Ok(match r.u8("group action")? {
            1 => Action::Create { name: read_name(r)?, nonce: r.array("group nonce")? },
            2 => Action::Add { member: read_identity(r)?, name: read_name(r)? },
            3 => Action::Remove { member: read_identity(r)? },
            4 => Action::Leave,
            5 => Action::SetRole {
                member: read_identity(r)?,
                role: match r.u8("role")? {
                    0 => Role::Member,
                    1 => Role::Admin,
                    _ => return Err(EntryError::Invalid("role")),
                },
            },
            6 => Action::Rename { name: read_name(r)? },
            _ => return Err(EntryError::Invalid("group action")),
        })
    }

    /// The member the action is about, if it is about one (the author, for `Leave`).
    pub fn subject(&self, author: &IdentityPublic) -> Option<IdentityPublic> {
        match self {
            Action::Add { member, .. } | Action::Remove { member } | Action::SetRole { member, .. } => {
                Some(*member)
            }
            Action::Leave => Some(*author),
            Action::Create { .. } | Action::Rename { .. } => None,
        }
    }
}

/// A signed entry of a membership log.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The group (all zero in the genesis, whose hash makes the id).
    pub group_id: GroupId,
    /// 0 for the genesis, else one more than the largest of its parents'.
    pub n: u32,
    /// The entries it follows: none for the genesis, else 1 to [`MAX_PARENTS`], distinct.
    pub parents: Vec<EntryHash>,
    /// Who signed it.
    pub author: IdentityPublic,
    /// When, by the author's clock (informative).
    pub created_at: Timestamp,
    /// What it does.
    pub action: Action,
    /// The author's signature.
    pub signature: [u8; 64],
}

impl fmt::Debug for Entry {
    // Names are what someone wrote: lengths only, as for texts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("n", &self.n)
            .field("parents", &self.parents.len())
            .field("action", &self.action.tag())
            .finish_non_exhaustive()
    }
}

/// Why bytes are not an entry, or an entry is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The bytes do not follow the layout.
    #[error("malformed group entry: {0}")]
    Decode(#[from] DecodeError),
    /// A field breaks a rule.
    #[error("invalid group entry: {0}")]
    Invalid(&'static str),
    /// The signature does not verify under the author's key.
    #[error("the group entry's signature does not verify")]
    BadSignature,
}

impl Entry {
    /// Signs an entry of group `group_id` by `author`.
    pub fn sign(
        author: &IdentityKey,
        group_id: GroupId,
        n: u32,
        parents: Vec<EntryHash>,
        created_at: Timestamp,
        action: Action,
    ) -> Result<Self, EntryError> {
        let mut entry =
            Entry { group_id, n, parents, author: author.public(), created_at, action, signature: [0; 64] };
        entry.check()?;
        let parts = entry.signed_parts();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        entry.signature = author.sign(label::GROUP_ENTRY, &refs);
        Ok(entry)
    }

    /// A new group's genesis, and the group's id.
    pub fn genesis(
        owner: &IdentityKey,
        name: &str,
        nonce: [u8; 16],
        created_at: Timestamp,
    ) -> Result<(GroupId, Self), EntryError> {
        let action = Action::Create { name: name.to_owned(), nonce };
        let entry = Entry::sign(owner, GroupId([0; 16]), 0, Vec::new(), created_at, action)?;
        Ok((entry.group_id_of_genesis(), entry))
    }

    /// The id of the group this entry, a genesis, creates.
    pub fn group_id_of_genesis(&self) -> GroupId {
        GroupId(kdf::hash_prefix(label::GROUP_ID, &[&self.to_bytes()]))
    }

    /// The entry's hash.
    pub fn hash(&self) -> EntryHash {
        EntryHash(kdf::hash(label::GROUP_ENTRY_HASH, &[&self.to_bytes()]))
    }

    /// Checks the signature under the author's key.
    pub fn verify(&self) -> Result<(), EntryError> {
        let parts = self.signed_parts();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.author.verify(label::GROUP_ENTRY, &refs, &self.signature).map_err(|_| EntryError::BadSignature)
    }

    /// The fields the signature covers, each one part.
    fn signed_parts(&self) -> [Vec<u8>; 6] {
        let mut action = Writer::new();
        self.action.encode(&mut action);
        [
            self.group_id.0.to_vec(),
            self.n.to_be_bytes().to_vec(),
            self.parents.iter().flat_map(|p| p.0).collect(),
            self.author.as_bytes().to_vec(),
            self.created_at.0.to_be_bytes().to_vec(),
            action.into_bytes(),
        ]
    }

    /// The rules of the layout beyond what decoding checks: a genesis is a `Create` with no
    /// parents at `n` 0 and a zero group id; any other entry has 1 to 4 distinct parents.
    fn check(&self) -> Result<(), EntryError> {
        let genesis = matches!(self.action, Action::Create { .. });
        if genesis != self.parents.is_empty() || genesis != (self.n == 0) {
            return Err(EntryError::Invalid("only the genesis creates, at 0, without parents"));
        }
        if genesis && self.group_id != GroupId([0; 16]) {
            return Err(EntryError::Invalid("a genesis names no group"));
        }
        if self.parents.len() > MAX_PARENTS {
            return Err(EntryError::Invalid("too many parents"));
        }
        let mut sorted = self.parents.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.parents.len() {
            return Err(EntryError::Invalid("a parent cited twice"));
        }
        match &self.action {
            Action::Create { name, .. } | Action::Add { name, .. } | Action::Rename { name } => {
                check_name(name)
            }
            _ => Ok(()),
        }
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&self.group_id.0).u32(self.n).u8(u8::try_from(self.parents.len()).unwrap_or(u8::MAX));
        for parent in &self.parents {
            w.raw(&parent.0);
        }
        w.raw(self.author.as_bytes()).u64(self.created_at.0);
        self.action.encode(&mut w);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Decodes exactly one entry, checking its layout and keys (not its signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        let mut r = Reader::new(bytes);
        let group_id = GroupId(r.array("group id")?);
        let n = r.u32("entry number")?;
        let count = r.count_u8(MAX_PARENTS, "parents")?;
        let parents = (0..count).map(|_| r.array("parent").map(EntryHash)).collect::<Result<Vec<_>, _>>()?;
        let author = read_identity(&mut r)?;
        let created_at = Timestamp(r.u64("entry time")?);
        let action = Action::decode(&mut r)?;
        let signature = r.array("entry signature")?;
        r.finish()?;
        let entry = Entry { group_id, n, parents, author, created_at, action, signature };
        entry.check()?;
        Ok(entry)
    }
}

fn read_identity(r: &mut Reader<'_>) -> Result<IdentityPublic, EntryError> {
    IdentityPublic::from_bytes(r.array("identity")?).map_err(|_| EntryError::Invalid("identity key"))
}

fn read_name(r: &mut Reader<'_>) -> Result<String, EntryError> {
    let bytes = r.bytes_u8(MAX_GROUP_NAME_LEN, "name")?;
    let name = std::str::from_utf8(bytes).map_err(|_| EntryError::Invalid("name is not UTF-8"))?;
    check_name(name)?;
    Ok(name.to_owned())
}

/// A name: 1 to 64 bytes of UTF-8, not only spaces, without control characters.
fn check_name(name: &str) -> Result<(), EntryError> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN {
        return Err(EntryError::Invalid("a name is 1 to 64 bytes"));
    }
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(EntryError::Invalid("a name has visible characters and no control characters"));
    }
    Ok(())
}
