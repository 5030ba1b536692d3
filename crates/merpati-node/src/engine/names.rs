//! Contact names as people type them: a name matches whatever its case and however its accents
//! were typed, two contacts cannot have names that differ only so, and a name that matches
//! nobody gets the nearest one offered.

use unicode_normalization::UnicodeNormalization;

use super::{Engine, EngineError};
use crate::store::Store;

/// The longest edit distance (in characters) at which a name is offered as what was meant
/// (for names of six characters or more; shorter ones get one).
const SUGGEST_DISTANCE: usize = 2;

/// A name with its case folded (Unicode-aware: `Ä` and `ä` fold alike) and in Unicode's
/// composed form (NFC): `é` typed as one character or as `e` and a combining accent, alike.
fn fold(name: &str) -> String {
    name.to_lowercase().nfc().collect()
}

impl<S: Store> Engine<S> {
    /// The stored name of the contact the user means by `name`: the contact called exactly that,
    /// else the one whose name differs only in case. Otherwise [`EngineError::UnknownContactLike`]
    /// with the nearest name, if one is within two edits.
    pub fn resolve_contact(&self, name: &str) -> Result<String, EngineError> {
        // A group member kept for the group's sake is no contact of the user's.
        if super::is_member_contact(name) {
            return Err(EngineError::UnknownContact(name.to_owned()));
        }
        if self.store.contact(name)?.is_some() {
            return Ok(name.to_owned());
        }
        let mut contacts = self.store.contacts()?;
        contacts.retain(|c| !super::is_member_contact(&c.name));
        let folded = fold(name);
        let same: Vec<&str> =
            contacts.iter().filter(|c| fold(&c.name) == folded).map(|c| c.name.as_str()).collect();
        match same.as_slice() {
            [one] => return Ok((*one).to_owned()),
            // Two names differing only in case, from before they were refused: say which.
            [_, _, ..] => {
                let matches = same.iter().map(|n| (*n).to_owned()).collect();
                return Err(EngineError::AmbiguousContact { name: name.to_owned(), matches });
            }
            [] => {}
        }
        // Transpositions count as one edit; short names get fewer, so "jo" is not offered "al".
        let most = (folded.chars().count() / 3).clamp(1, SUGGEST_DISTANCE);
        let suggestion = contacts
            .iter()
            .map(|c| (strsim::osa_distance(&fold(&c.name), &folded), &c.name))
            .filter(|(distance, _)| *distance <= most)
            .min()
            .map(|(_, name)| name.clone());
        Err(EngineError::UnknownContactLike { name: name.to_owned(), suggestion })
    }

    /// Refuses `name` for a contact if another contact (not `except`) has a name that differs
    /// from it only in case, or is it.
    pub(super) fn check_name_free(&self, name: &str, except: Option<&str>) -> Result<(), EngineError> {
        let folded = fold(name);
        match self
            .store
            .contacts()?
            .into_iter()
            .find(|c| Some(c.name.as_str()) != except && fold(&c.name) == folded)
        {
            Some(taken) => Err(EngineError::ContactExists(taken.name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{T0, engine, pair, peer};
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn names_match_whatever_their_case_and_a_typo_gets_the_nearest() {
        let (mut alice, _bob) = pair();
        let carol = engine(MemoryStore::new(), 3, "Carol").invite(peer(3).to_bytes(), vec![], T0).unwrap();
        alice.add_contact(&carol, "Ärger Carol", T0).unwrap();
        assert_eq!(alice.resolve_contact("bob").unwrap(), "bob");
        assert_eq!(alice.resolve_contact("BOB").unwrap(), "bob");
        assert_eq!(alice.resolve_contact("ärger carol").unwrap(), "Ärger Carol");
        let err = alice.resolve_contact("bbo").unwrap_err();
        assert_eq!(err.to_string(), "no contact named \"bbo\"; did you mean \"bob\"?");
        let err = alice.resolve_contact("dave").unwrap_err();
        assert_eq!(err.to_string(), "no contact named \"dave\"");
        // A sent text finds its contact by any case.
        let to = alice.resolve_contact("Bob").unwrap();
        assert_eq!(alice.send_text(&to, "hi", T0).unwrap().contact, "bob");

        // Names that differ only in case cannot both be taken; a change of case is a rename.
        let dave = engine(MemoryStore::new(), 4, "Dave").invite(peer(4).to_bytes(), vec![], T0).unwrap();
        let taken = alice.add_contact(&dave, "BOB", T0).unwrap_err();
        assert!(matches!(&taken, EngineError::ContactExists(name) if name == "bob"), "{taken}");
        alice.add_contact(&dave, "dave", T0).unwrap();
        assert!(matches!(alice.rename_contact("dave", "Bob"), Err(EngineError::ContactExists(_))));
        assert_eq!(alice.rename_contact("bob", "Bob").unwrap().name, "Bob");
        assert_eq!(alice.resolve_contact("bob").unwrap(), "Bob");
        assert!(matches!(
            alice.resolve_contact("jo"),
            Err(EngineError::UnknownContactLike { suggestion: None, .. })
        ));

        // An accent typed as its own character or as a combining mark is the same name.
        let (composed, decomposed) = ("Jos\u{e9}", "jose\u{301}");
        assert_eq!(alice.rename_contact("dave", composed).unwrap().name, composed);
        assert_eq!(alice.resolve_contact(decomposed).unwrap(), composed);
        let frank = engine(MemoryStore::new(), 6, "Frank").invite(peer(6).to_bytes(), vec![], T0).unwrap();
        let taken = alice.add_contact(&frank, decomposed, T0).unwrap_err();
        assert!(matches!(&taken, EngineError::ContactExists(name) if name == composed), "{taken}");

        // Twins written before they were refused are not guessed between.
        let erin = engine(MemoryStore::new(), 5, "Erin").profile().identity.public();
        let twin = super::super::requests::stranger_contact("BOB", erin, T0);
        alice.store().apply(&[crate::store::Change::AddContact(twin)]).unwrap();
        assert_eq!(alice.resolve_contact("BOB").unwrap(), "BOB", "an exact name still wins");
        let err = alice.resolve_contact("boB").unwrap_err();
        assert_eq!(err.to_string(), "\"boB\" could be any of \"BOB\", \"Bob\": type the name exactly");
    }
}
