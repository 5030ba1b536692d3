//! `merpati invite`: asks the daemon for a fresh invite and prints it, the invite alone on the
//! last line (so `merpati invite | tail -1` is the invite), optionally under a terminal QR code.

use anyhow::{Result, bail};
use merpati_control::Home;
use merpati_control::protocol::{NoParams, method};
use qrcode::bits::Bits;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode, QrResult, Version};

use crate::commands::connect;
use crate::output::{Output, sanitize};

/// Arguments of `merpati invite`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also print the invite as a QR code, for a phone camera (ignored with --json)
    #[arg(long)]
    qr: bool,
}

/// Prints a fresh invite.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    let result = connect(home)?.call::<method::Invite>(NoParams {})?;
    if out.is_json() {
        return out.object(&result);
    }
    if args.qr {
        out.line(qr_code(&result.invite)?)?;
    } else {
        out.line("Give this invite to the person who should add you (it is one line):")?;
    }
    out.line(sanitize(&result.invite))
}

/// Characters of the QR alphanumeric mode (ISO/IEC 18004 table 5).
fn is_qr_alphanumeric(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'Z' | b' ' | b'$' | b'%' | b'*' | b'+' | b'-' | b'.' | b'/' | b':')
}

/// `text` as a QR code drawn with Unicode half blocks, two modules per character cell.
///
/// Invites are uppercase base32 after `MERPATI1:`, all in the alphanumeric set, which packs 5.5
/// bits per character instead of byte mode's 8: the code is about a third smaller and easier to
/// scan off a screen. Error correction is the lowest level for the same reason; a screen does not
/// smudge. Light modules are drawn as blocks, which reads correctly on the usual dark terminal.
fn qr_code(text: &str) -> Result<String> {
    if !text.bytes().all(is_qr_alphanumeric) {
        bail!("this invite has characters a QR code cannot hold in alphanumeric mode; copy the text instead");
    }
    let Some(code) = smallest_code(text, Bits::push_alphanumeric_data) else {
        bail!("this invite is too long for a QR code; copy the text instead");
    };
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build())
}

/// The smallest QR code holding `text` in the mode `push` writes.
fn smallest_code(text: &str, push: fn(&mut Bits, &[u8]) -> QrResult<()>) -> Option<QrCode> {
    (1..=40).find_map(|version| {
        let mut bits = Bits::new(Version::Normal(version));
        push(&mut bits, text.as_bytes()).ok()?;
        bits.push_terminator(EcLevel::L).ok()?;
        QrCode::with_bits(bits, EcLevel::L).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_become_alphanumeric_qr_codes() {
        let invite = format!("MERPATI1:{}", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".repeat(30));
        let drawn = qr_code(&invite).unwrap();
        assert!(drawn.chars().all(|c| matches!(c, ' ' | '\u{2580}' | '\u{2584}' | '\u{2588}' | '\n')));
        let alphanumeric = smallest_code(&invite, Bits::push_alphanumeric_data).unwrap();
        let bytes = smallest_code(&invite, Bits::push_byte_data).unwrap();
        assert!(alphanumeric.width() < bytes.width());
        // Two modules per row of text, plus the quiet zone of 4 modules on each side.
        assert_eq!(drawn.lines().count(), (alphanumeric.width() + 8).div_ceil(2));
        assert!(qr_code("merpati1:lower").is_err());
        assert!(qr_code(&"A".repeat(5000)).is_err());
    }
}
