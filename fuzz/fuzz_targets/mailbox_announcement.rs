//! Fuzzes `mailbox::Announcement::decode`: never panics, respects the id limits, and whatever it
//! accepts encodes back to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_proto::codec::{Reader, Writer};
use merpati_proto::mailbox::{Announcement, MAX_ANNOUNCED_IDS};

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(data);
    let Ok(announcement) = Announcement::decode(&mut reader) else { return };
    assert!((1..=MAX_ANNOUNCED_IDS).contains(&announcement.ids.len()));
    let consumed = data.len() - reader.remaining();
    let mut writer = Writer::new();
    announcement.encode(&mut writer);
    assert_eq!(writer.into_bytes(), &data[..consumed]);
});
