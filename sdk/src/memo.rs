//! [`Memo`]: one batch's answers of a pure function of a text, kept so a
//! text seen again is not worked out again. A batch's events share few
//! user agents (a visitor sends several events; a page, several views):
//! parsing each one once instead of once per event was 25 µs an event in
//! the bot filter. Bounded, for a batch of made-up texts must not grow
//! the plugin's memory: past `most` texts it starts over, and a text
//! longer than `longest` bytes is worked out every time.

use std::cell::RefCell;
use std::collections::HashMap;

pub struct Memo<V> {
    seen: RefCell<HashMap<Box<str>, V>>,
    most: usize,
    longest: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(most: usize, longest: usize) -> Memo<V> {
        Memo {
            seen: RefCell::new(HashMap::new()),
            most,
            longest,
        }
    }

    /// `work(text)`, worked out once per text.
    pub fn get(&self, text: &str, work: impl FnOnce(&str) -> V) -> V {
        if text.len() > self.longest {
            return work(text);
        }
        if let Some(v) = self.seen.borrow().get(text) {
            return v.clone();
        }
        let v = work(text);
        let mut seen = self.seen.borrow_mut();
        if seen.len() >= self.most {
            seen.clear();
        }
        seen.insert(text.into(), v.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn each_text_is_worked_out_once_within_its_bounds() {
        let calls = Cell::new(0);
        let memo = Memo::new(2, 8);
        let len = |t: &str| {
            calls.set(calls.get() + 1);
            t.len()
        };
        assert_eq!(memo.get("abc", len), 3);
        assert_eq!(memo.get("abc", len), 3);
        assert_eq!(calls.get(), 1);
        // Too long to keep: worked out each time.
        assert_eq!(memo.get("abcdefghij", len), 10);
        assert_eq!(memo.get("abcdefghij", len), 10);
        assert_eq!(calls.get(), 3);
        // Past two texts it starts over.
        memo.get("d", len);
        memo.get("e", len);
        assert_eq!(memo.seen.borrow().len(), 1);
        assert_eq!(memo.get("e", len), 1);
        assert_eq!(calls.get(), 5);
    }
}
