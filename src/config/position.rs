//! Source positions of every value in a JSON text, and its duplicate keys.
//!
//! serde_json keeps no positions and silently keeps the last of two equal keys
//! (DESIGN.md §10, "JSON positions"), so the loader first parses the text with serde_json
//! (which reports syntax errors with their position) and then makes this second, cheap pass
//! over the same, now known-good, text. The pass records, for every JSON pointer, where its
//! key and its value start, and every key that appears twice in one object.
//!
//! Lines and columns are 1-based; a column counts characters (not bytes), as an editor
//! shows it. Pointers are escaped as RFC 6901 says (`~` → `~0`, `/` → `~1`), the same way
//! the schema validator writes its instance paths, so the two can be joined.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// A place in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column, in characters.
    pub(crate) column: usize,
}

/// Where one member or element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spot {
    /// The key's opening quote, for object members.
    key: Option<Pos>,
    /// The value's first character.
    value: Pos,
}

/// A key that appears twice in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    /// The member's pointer.
    pub(crate) pointer: String,
    /// The key's first appearance.
    pub(crate) first: Pos,
    /// The later appearance (the one serde_json keeps).
    pub(crate) again: Pos,
}

/// The positions of one JSON text.
///
/// [`Positions::scan`] finds the duplicate keys only; a valid file (the common case) never
/// pays for more. The spots of values are recorded by a second pass, [`Positions::index`]
/// (every pointer) or [`Positions::index_for`] (the pointers a caller will look up), made
/// only when a position is needed: one pass over the text with one pointer buffer, instead
/// of a string per value and a sort of them all.
#[derive(Debug)]
pub(crate) struct Positions<'a> {
    text: &'a str,
    /// The spot of each recorded pointer: of two equal pointers (a duplicate key), the
    /// later one, the one serde_json keeps.
    spots: HashMap<String, Spot>,
    /// What was recorded: `None` before indexing, `Some(None)` every pointer,
    /// `Some(Some(set))` those in the set.
    recorded: Option<Option<HashSet<String>>>,
    /// Keys repeated inside one object, in text order.
    pub(crate) duplicates: Vec<Duplicate>,
}

impl<'a> Positions<'a> {
    /// Scan `text`, which serde_json has already accepted, for duplicate keys. On text it
    /// did not accept, the scan stops where it gets lost and keeps what it found so far.
    pub(crate) fn scan(text: &'a str) -> Self {
        let mut s = Scanner::new(text, Record::Duplicates);
        let _complete = s.value(None, true);
        Self {
            duplicates: s.duplicates,
            ..Self::unscanned(text)
        }
    }

    /// The positions of `text` known to have no duplicate key (the parse that read it found
    /// none, see `load::parse`): [`Positions::scan`] would find nothing, so it is not made.
    pub(crate) fn unscanned(text: &'a str) -> Self {
        Self {
            text,
            spots: HashMap::new(),
            recorded: None,
            duplicates: Vec::new(),
        }
    }

    /// Record where every value is; call before [`Positions::value`] or
    /// [`Positions::key`]. (The loader records only what it looks up: `index_for`.)
    #[cfg(test)]
    pub(crate) fn index(&mut self) {
        if matches!(self.recorded, Some(None)) {
            return;
        }
        self.spots = self.pass(Record::All);
        self.recorded = Some(None);
    }

    /// Record where the values at `pointers` and at each of their ancestors are (what
    /// [`Positions::value`] and [`Positions::key`] of those pointers, and of their
    /// ancestors, look at); call before looking them up.
    pub(crate) fn index_for<'p>(&mut self, pointers: impl IntoIterator<Item = &'p str>) {
        let mut wanted: HashSet<String> = HashSet::new();
        for pointer in pointers {
            let mut p = pointer;
            loop {
                if !wanted.insert(p.to_owned()) {
                    // Its ancestors are in already.
                    break;
                }
                match p.rfind('/') {
                    Some(i) => p = &p[..i],
                    None => break,
                }
            }
        }
        self.spots = self.pass(Record::Wanted(&wanted));
        self.recorded = Some(Some(wanted));
    }

    fn pass(&self, record: Record<'_>) -> HashMap<String, Spot> {
        let mut s = Scanner::new(self.text, record);
        let _complete = s.value(None, true);
        s.spots
    }

    fn spot(&self, pointer: &str) -> Option<&Spot> {
        debug_assert!(
            match &self.recorded {
                None => false,
                Some(None) => true,
                Some(Some(wanted)) => wanted.contains(pointer),
            },
            "Positions::index or index_for({pointer:?}) must run before lookups"
        );
        self.spots.get(pointer)
    }

    /// Where the value at `pointer` starts; for a pointer that is not in the text (a
    /// missing field), where its nearest ancestor starts.
    pub(crate) fn value(&self, pointer: &str) -> Option<Pos> {
        let mut p = pointer;
        loop {
            if let Some(spot) = self.spot(p) {
                return Some(spot.value);
            }
            p = &p[..p.rfind('/')?];
        }
    }

    /// Where the key of the member at `pointer` starts (its value for array elements and
    /// the root), falling back like [`Positions::value`].
    pub(crate) fn key(&self, pointer: &str) -> Option<Pos> {
        match self.spot(pointer) {
            Some(spot) => Some(spot.key.unwrap_or(spot.value)),
            None => self.value(pointer),
        }
    }
}

/// Escape one reference token of a JSON pointer (RFC 6901).
pub(crate) fn escape_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1").into()
    } else {
        token.into()
    }
}

/// What a pass over the text records.
#[derive(Clone, Copy)]
enum Record<'w> {
    /// Duplicate keys, no spots.
    Duplicates,
    /// The spot of every value.
    #[cfg(test)]
    All,
    /// The spots of the values at these pointers.
    Wanted(&'w HashSet<String>),
}

struct Scanner<'a, 'w> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    /// Where each line starts (made on the first position asked for).
    lines: Vec<usize>,
    /// The pointer of the value being read (one buffer: a member pushes its token and
    /// takes it off again).
    pointer: String,
    record: Record<'w>,
    spots: HashMap<String, Spot>,
    duplicates: Vec<Duplicate>,
}

impl<'a, 'w> Scanner<'a, 'w> {
    fn new(text: &'a str, record: Record<'w>) -> Self {
        Self {
            b: text.as_bytes(),
            text,
            i: 0,
            lines: Vec::new(),
            pointer: String::new(),
            record,
            spots: HashMap::new(),
            duplicates: Vec::new(),
        }
    }

    /// The line and column of byte `offset`: the pass keeps offsets and counts lines and
    /// characters only for what it records.
    fn pos(&mut self, offset: usize) -> Pos {
        if self.lines.is_empty() {
            self.lines.push(0);
            self.lines.extend(
                self.b
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'\n')
                    .map(|(i, _)| i + 1),
            );
        }
        let line = self.lines.partition_point(|start| *start <= offset);
        let start = self.lines[line - 1];
        // Characters, not bytes: UTF-8 continuation bytes do not start one.
        let column = self.b[start..offset]
            .iter()
            .filter(|c| **c & 0xC0 != 0x80)
            .count();
        Pos {
            line,
            column: column + 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Step over one byte.
    fn bump(&mut self) {
        if self.i < self.b.len() {
            self.i += 1;
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == c).then(|| self.bump())
    }

    /// One value at `self.pointer`; records it and everything inside it. `parent`: whether
    /// the enclosing value was recorded (a wanted pointer's ancestors are wanted too, so
    /// below one that is not, nothing is).
    fn value(&mut self, key: Option<usize>, parent: bool) -> Option<()> {
        self.skip_ws();
        let value = self.i;
        let wanted = match self.record {
            Record::Duplicates => false,
            #[cfg(test)]
            Record::All => true,
            Record::Wanted(set) => {
                if !(parent && set.contains(self.pointer.as_str())) {
                    // Nothing below an unwanted value is wanted: step over it without
                    // building a pointer for each of its members.
                    return self.skip_value();
                }
                true
            }
        };
        match self.peek()? {
            b'{' => self.object(wanted)?,
            b'[' => self.array(wanted)?,
            b'"' => {
                self.string()?;
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.bump();
                }
            }
        }
        if wanted {
            // Later values of one pointer replace earlier ones, as in serde_json.
            let spot = Spot {
                key: key.map(|k| self.pos(k)),
                value: self.pos(value),
            };
            self.spots.insert(self.pointer.clone(), spot);
        }
        Some(())
    }

    fn object(&mut self, wanted: bool) -> Option<()> {
        self.bump();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.bump();
            return Some(());
        }
        // Keys and where they start, to find duplicates once the object is read.
        let duplicates = matches!(self.record, Record::Duplicates);
        let mut keys: Vec<(Cow<'_, str>, usize)> = Vec::new();
        let len = self.pointer.len();
        loop {
            self.skip_ws();
            let key_pos = self.i;
            let key = self.string()?;
            self.expect(b':')?;
            self.pointer.push('/');
            self.pointer.push_str(&escape_token(&key));
            if duplicates {
                keys.push((key, key_pos));
            }
            self.value(Some(key_pos), wanted)?;
            self.pointer.truncate(len);
            self.skip_ws();
            match self.peek()? {
                b',' => self.bump(),
                b'}' => {
                    self.bump();
                    break;
                }
                _ => return None,
            }
        }
        // Stable: equal keys stay in text order, so each run starts with the first one.
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let mut found = Vec::new();
        for pair in keys.windows(2) {
            let [(first_key, _), (key, again)] = pair else {
                continue;
            };
            if first_key == key {
                let first = keys.iter().find(|(k, _)| k == key).map_or(*again, |k| k.1);
                let pointer = format!("{}/{}", self.pointer, escape_token(key));
                found.push(Duplicate {
                    pointer,
                    first: self.pos(first),
                    again: self.pos(*again),
                });
            }
        }
        found.sort_by_key(|d| d.again);
        self.duplicates.extend(found);
        Some(())
    }

    fn array(&mut self, wanted: bool) -> Option<()> {
        self.bump();
        self.skip_ws();
        if self.peek()? == b']' {
            self.bump();
            return Some(());
        }
        let len = self.pointer.len();
        let mut index = 0usize;
        loop {
            let _ = write!(self.pointer, "/{index}");
            self.value(None, wanted)?;
            self.pointer.truncate(len);
            index += 1;
            self.skip_ws();
            match self.peek()? {
                b',' => self.bump(),
                b']' => {
                    self.bump();
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Step over the value that starts here (after whitespace), recording nothing: strings
    /// are skipped to their closing quote, so brackets inside them do not count.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => {
                            depth += 1;
                            self.bump();
                        }
                        b'}' | b']' => {
                            self.bump();
                            depth -= 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => self.bump(),
                    }
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.bump();
                }
                Some(())
            }
        }
    }

    /// Step over a string starting at its opening quote.
    fn skip_string(&mut self) -> Option<()> {
        self.bump();
        loop {
            match self.peek()? {
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    return Some(());
                }
                _ => self.bump(),
            }
        }
    }

    /// A string starting at its opening quote; returns its decoded text (borrowed from the
    /// input unless it has escapes).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        self.bump();
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'\\' => {
                    escaped = true;
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    break;
                }
                _ => self.bump(),
            }
        }
        let raw = self.text.get(start..self.i)?;
        if escaped {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            raw.get(1..raw.len() - 1).map(Cow::Borrowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn records_values_and_keys() {
        let text = "{\n  \"lxc_configs\": {\n    \"901\": { \"memory_mb\": \"invalid\",\n      \"gpu\": [0, 1] }\n  }\n}\n";
        let mut pos = Positions::scan(text);
        pos.index();
        assert_eq!(pos.value(""), Some(p(1, 1)));
        assert_eq!(pos.key("/lxc_configs"), Some(p(2, 3)));
        assert_eq!(pos.value("/lxc_configs"), Some(p(2, 18)));
        assert_eq!(pos.key("/lxc_configs/901"), Some(p(3, 5)));
        assert_eq!(pos.value("/lxc_configs/901"), Some(p(3, 12)));
        assert_eq!(pos.key("/lxc_configs/901/memory_mb"), Some(p(3, 14)));
        assert_eq!(pos.value("/lxc_configs/901/memory_mb"), Some(p(3, 27)));
        assert_eq!(pos.value("/lxc_configs/901/gpu/0"), Some(p(4, 15)));
        assert_eq!(pos.value("/lxc_configs/901/gpu/1"), Some(p(4, 18)));
        assert!(pos.duplicates.is_empty());
    }

    #[test]
    fn missing_pointer_falls_back_to_nearest_ancestor() {
        let mut pos = Positions::scan("{\"a\": {\"b\": 1}}");
        pos.index();
        assert_eq!(pos.value("/a/c"), Some(p(1, 7)));
        assert_eq!(pos.key("/a/c/d"), Some(p(1, 7)));
        assert_eq!(pos.value("/zzz"), Some(p(1, 1)));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let mut pos = Positions::scan("{\"n\": \"ééé\", \"m\": 1}");
        pos.index();
        assert_eq!(pos.value("/m"), Some(p(1, 19)));
    }

    #[test]
    fn escaped_keys_become_pointer_tokens() {
        let mut pos = Positions::scan(r#"{"a/b": 1, "c~d": 2, "\u0065": 3, "q\"x": 4}"#);
        pos.index();
        assert_eq!(pos.value("/a~1b"), Some(p(1, 9)));
        assert_eq!(pos.value("/c~0d"), Some(p(1, 19)));
        assert_eq!(pos.value("/e"), Some(p(1, 32)));
        assert_eq!(pos.value("/q\"x"), Some(p(1, 43)));
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let text = "{\"lxc_configs\": {\n\"901\": {\"a\": 1, \"a\": 2},\n\"901\": {}\n}}";
        let mut pos = Positions::scan(text);
        pos.index();
        assert_eq!(
            pos.duplicates,
            vec![
                Duplicate {
                    pointer: "/lxc_configs/901/a".into(),
                    first: p(2, 9),
                    again: p(2, 17),
                },
                Duplicate {
                    pointer: "/lxc_configs/901".into(),
                    first: p(2, 1),
                    again: p(3, 1),
                },
            ]
        );
        // The last one wins, as in serde_json.
        assert_eq!(pos.value("/lxc_configs/901"), Some(p(3, 8)));
    }

    #[test]
    fn index_for_steps_over_unwanted_values_with_brackets_in_strings() {
        // The values before the wanted one hold brackets, braces, commas and escaped quotes
        // inside strings, nested containers and scalars: skipping them must land exactly
        // where a full index finds the wanted values.
        let text = "{\"a\": {\"s\": \"}]{[,\\\"\", \"n\": [[1, {\"x\": \"]\"}], -2.5e3, true]},\n \"b\": [null, \"\\\\\", {\"c\": {\"d\": \"}\"}}],\n \"e\": {\"f\": [1, 2]}}";
        let mut all = Positions::scan(text);
        all.index();
        let asked = ["/e/f/1", "/b/2/c/d", "/a/n/0/1/x"];
        let mut some = Positions::unscanned(text);
        some.index_for(asked);
        assert_same_spots(&some, &all, &asked);
        assert_eq!(some.value("/e/f/1"), Some(p(3, 17)));
        assert_eq!(some.value("/b/2/c/d"), Some(p(2, 32)));
    }

    /// `some` places every pointer of `asked` (value and key) where the full index `all`
    /// does.
    fn assert_same_spots(some: &Positions, all: &Positions, asked: &[&str]) {
        for pointer in asked {
            assert_eq!(some.value(pointer), all.value(pointer), "{pointer}");
            assert_eq!(some.key(pointer), all.key(pointer), "{pointer}");
        }
    }

    #[test]
    fn unscanned_positions_have_no_duplicates() {
        let text = "{\"a\": 1, \"a\": 2}";
        assert_eq!(Positions::scan(text).duplicates.len(), 1);
        assert!(Positions::unscanned(text).duplicates.is_empty());
    }

    #[test]
    fn index_for_finds_what_a_full_index_finds() {
        let text = "{\"lxc_configs\": {\n\"901\": {\"a\": 1, \"a\": [2, {\"x/y\": 3}]},\n\"902\": {\"b\": 4}\n}}";
        let mut all = Positions::scan(text);
        all.index();
        let asked = [
            "/lxc_configs/901/a/1/x~1y",
            "/lxc_configs/901/a/0",
            "/lxc_configs/902/missing/deeper",
            "/nothing",
        ];
        let mut some = Positions::scan(text);
        some.index_for(asked);
        assert_eq!(some.duplicates, all.duplicates);
        assert_same_spots(&some, &all, &asked);
        assert_eq!(some.value("/lxc_configs/901/a/1/x~1y"), Some(p(2, 34)));
        assert_eq!(some.key("/lxc_configs/902/missing/deeper"), Some(p(3, 8)));
    }

    #[test]
    fn scalars_and_empty_containers() {
        let mut pos = Positions::scan("[true, null, -1.5e3, {}, [], \"\"]");
        pos.index();
        assert_eq!(pos.value("/2"), Some(p(1, 14)));
        assert_eq!(pos.value("/3"), Some(p(1, 22)));
        assert_eq!(pos.value("/4"), Some(p(1, 26)));
        assert_eq!(pos.value("/5"), Some(p(1, 30)));
    }

    #[test]
    fn broken_text_keeps_what_was_found() {
        let mut pos = Positions::scan("{\"a\": 1, \"b\": [1, ");
        pos.index();
        assert_eq!(pos.value("/a"), Some(p(1, 7)));
        assert_eq!(pos.value("/b/0"), Some(p(1, 16)));
    }
}
