//! What a backup holds, record by record, and how records are framed inside the encrypted
//! stream: a magic line, then `u32` big-endian length ‖ postcard record, ending with
//! [`Record::End`]. Each record is bounded, so a damaged backup is refused, not trusted.

use std::io::{self, Read, Write};

use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::store::{
    Blocked, Contact, FileInfo, GroupMessageInfo, GroupRecord, Profile, StoredMessage, Transfer,
};

/// The first bytes of a backup's plaintext: what it is, and the format's version.
pub(crate) const MAGIC: &[u8] = b"merpati backup 1\n";

/// The largest record: a long text (1 MiB) or a spooled file's piece ([`SPOOL_PIECE`]) with
/// room for its framing.
pub(crate) const MAX_RECORD_LEN: usize = 2 << 20;

/// How much of a spooled file one record carries.
pub(crate) const SPOOL_PIECE: usize = 1 << 20;

/// The largest config file a backup carries (a config file is a few lines).
pub(crate) const MAX_CONFIG_LEN: usize = 64 << 10;

/// Bytes that are a secret: zeroized when dropped, never printed.
pub(crate) struct SecretBytes(pub(crate) Zeroizing<Vec<u8>>);

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        Ok(SecretBytes(Zeroizing::new(bytes.into_vec())))
    }
}

/// Which spool directory a spooled file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SpoolSide {
    /// `blobs/out`: files we send.
    Out,
    /// `blobs/in`: files we receive.
    In,
}

impl SpoolSide {
    /// The directory's name under `<home>/blobs`.
    pub(crate) fn dir_name(self) -> &'static str {
        match self {
            SpoolSide::Out => "out",
            SpoolSide::In => "in",
        }
    }
}

/// One record of a backup.
#[derive(Serialize, Deserialize)]
pub(crate) enum Record {
    /// The identity file's bytes (its own checked format).
    Identity(SecretBytes),
    /// The node's profile: device key, its certificate, prekeys and node key.
    Profile(Profile),
    /// The daemon's config file (`merpatid.toml`), if the home had one.
    Config(String),
    /// The user's relays.
    Relays(Vec<Vec<u8>>),
    /// A contact, without any session.
    Contact(Contact),
    /// A blocked identity.
    Blocked(Blocked),
    /// A message of the history, in conversation order.
    Message(StoredMessage),
    /// The file a message carries, and its bytes when they came with it.
    File {
        /// The message.
        id: MessageId,
        /// What the file is.
        info: FileInfo,
        /// Its bytes, for a file that travelled inside its description.
        data: Option<SecretBytes>,
    },
    /// The transfer of a larger file a message carries.
    Transfer {
        /// The message.
        id: MessageId,
        /// The transfer.
        transfer: Transfer,
    },
    /// A piece of a spooled (encrypted) file, at `offset`.
    Spool {
        /// Its directory.
        side: SpoolSide,
        /// Its name there (32 hex digits).
        name: String,
        /// Where the piece starts.
        offset: u64,
        /// The piece.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The end: when the backup was made and how many records came before it, so a cut-off
    /// backup is told from a whole one.
    End {
        /// When the backup was made.
        made_at: Timestamp,
        /// The records before this one.
        records: u64,
    },
    /// A group, with its membership log and our count of messages sent to it. (Variants after
    /// `End` came later; their places keep older backups readable.)
    Group(GroupRecord),
    /// What a group message is: its sender and count, and for ours the copies' states.
    GroupMessage(GroupMessageInfo),
}

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// Reading failed (for an age stream, this includes a wrong tag: a damaged file).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not what a backup holds.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Writes records into `out` (the plaintext side of the encryption), counting them.
pub(crate) struct RecordWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a backup in `out`.
    pub(crate) fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self { out, records: 0 })
    }

    /// Writes one record.
    pub(crate) fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = Zeroizing::new(postcard::to_allocvec(record).map_err(io::Error::other)?);
        if bytes.len() > MAX_RECORD_LEN {
            return Err(io::Error::other(format!(
                "a record of {} bytes is larger than a backup holds",
                bytes.len()
            )));
        }
        let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&bytes)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end record and hands back the output, to be finished by its owner.
    pub(crate) fn finish(mut self, made_at: Timestamp) -> io::Result<(W, u64)> {
        let records = self.records;
        self.write(&Record::End { made_at, records })?;
        Ok((self.out, records))
    }
}

/// Reads records from `input` (the plaintext side of the decryption).
pub(crate) struct RecordReader<R: Read> {
    input: R,
    records: u64,
    ended: bool,
}

impl<R: Read> RecordReader<R> {
    /// Checks that `input` starts as a backup does.
    pub(crate) fn new(mut input: R) -> Result<Self, ReadError> {
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|_| ReadError::Invalid("it is not a Merpati backup"))?;
        if magic != MAGIC {
            return Err(ReadError::Invalid("it is not a Merpati backup, or one of a newer version"));
        }
        Ok(Self { input, records: 0, ended: false })
    }

    /// The next record, or `None` after [`Record::End`] (checked against the count, and that
    /// nothing follows it).
    pub(crate) fn next(&mut self) -> Result<Option<Record>, ReadError> {
        if self.ended {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(|e| cut_off(e, "the backup ends before its end record"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD_LEN {
            return Err(ReadError::Invalid("a record is larger than a backup holds"));
        }
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        self.input.read_exact(&mut bytes).map_err(|e| cut_off(e, "the backup ends inside a record"))?;
        let record: Record =
            postcard::from_bytes(&bytes).map_err(|_| ReadError::Invalid("a record does not decode"))?;
        if let Record::End { records, .. } = &record {
            if *records != self.records {
                return Err(ReadError::Invalid("the backup's record count does not match its end"));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest)? != 0 {
                return Err(ReadError::Invalid("there are bytes after the backup's end"));
            }
            self.ended = true;
        }
        self.records += 1;
        Ok(Some(record))
    }
}

/// An early end of input is a cut-off backup; any other error is itself.
fn cut_off(error: io::Error, what: &'static str) -> ReadError {
    if error.kind() == io::ErrorKind::UnexpectedEof { ReadError::Invalid(what) } else { ReadError::Io(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Config("role = \"user\"\n".into()),
            Record::Relays(vec![vec![1, 2, 3]]),
            Record::Spool { side: SpoolSide::In, name: "00".repeat(16), offset: 0, bytes: vec![7; 100] },
        ]
    }

    fn written(records: &[Record]) -> Vec<u8> {
        let mut writer = RecordWriter::new(Vec::new()).unwrap();
        for record in records {
            writer.write(record).unwrap();
        }
        writer.finish(Timestamp(5)).unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<usize, ReadError> {
        let mut reader = RecordReader::new(bytes)?;
        let mut n = 0;
        while reader.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn records_read_back_to_the_end() {
        let bytes = written(&sample());
        assert_eq!(read_all(&bytes).unwrap(), 4);
    }

    #[test]
    fn a_cut_off_or_padded_backup_is_refused() {
        let bytes = written(&sample());
        for cut in [MAGIC.len() - 1, MAGIC.len() + 2, bytes.len() - 1] {
            assert!(matches!(read_all(&bytes[..cut]), Err(ReadError::Invalid(_))), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(ReadError::Invalid(_))));
    }

    #[test]
    fn a_record_over_the_limit_is_refused_before_it_is_read() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_all(&bytes),
            Err(ReadError::Invalid("a record is larger than a backup holds"))
        ));
    }

    proptest::proptest! {
        /// Whatever follows the magic line, reading stops with records or an error, never a
        /// panic, and never reads past a record's bound.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = read_all(&bytes);
        }

        /// A whole backup with one byte changed is read or refused, never a panic.
        #[test]
        fn a_changed_byte_never_panics(at in 0usize..400, to in proptest::prelude::any::<u8>()) {
            let mut bytes = written(&sample());
            let at = at % bytes.len();
            bytes[at] = to;
            let _ = read_all(&bytes);
        }
    }

    #[test]
    fn another_file_is_not_taken_for_a_backup() {
        assert!(matches!(read_all(b"hello, this is not a backup at all"), Err(ReadError::Invalid(_))));
    }
}
