//! State kept per read model, sized by the list of read models: indexed by `ViewName`, so a read
//! model added to the list gets its slot everywhere without anyone counting.

use std::ops::{Index, IndexMut};

use super::ViewName;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerView<T>([T; ViewName::ALL.len()]);

impl<T> PerView<T> {
    pub fn from_fn(mut value: impl FnMut(ViewName) -> T) -> PerView<T> {
        PerView(ViewName::ALL.map(&mut value))
    }

    /// Each view with its value, in `ViewName::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (ViewName, &T)> {
        ViewName::ALL.into_iter().zip(self.0.iter())
    }

    /// Each view with its value, mutable, in `ViewName::ALL` order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ViewName, &mut T)> {
        ViewName::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// Each view with its value, taken.
    pub fn into_views(self) -> impl Iterator<Item = (ViewName, T)> {
        ViewName::ALL.into_iter().zip(self.0)
    }

    pub fn contains(&self, value: &T) -> bool
    where
        T: PartialEq,
    {
        self.0.contains(value)
    }

    pub fn map<U>(&self, mut f: impl FnMut(ViewName, &T) -> U) -> PerView<U> {
        PerView::from_fn(|view| f(view, &self[view]))
    }
}

impl<T: Default> Default for PerView<T> {
    fn default() -> Self {
        PerView::from_fn(|_| T::default())
    }
}

impl<T> Index<ViewName> for PerView<T> {
    type Output = T;
    fn index(&self, view: ViewName) -> &T {
        &self.0[view.position()]
    }
}

impl<T> IndexMut<ViewName> for PerView<T> {
    fn index_mut(&mut self, view: ViewName) -> &mut T {
        &mut self.0[view.position()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_has_its_own_slot() {
        let mut counts = PerView::<u32>::default();
        counts[ViewName::ALL[1]] += 2;
        let seen: Vec<(ViewName, u32)> = counts.iter().map(|(v, n)| (v, *n)).collect();
        let expected: Vec<(ViewName, u32)> = ViewName::ALL
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, if i == 1 { 2 } else { 0 }))
            .collect();
        assert_eq!(seen, expected);
    }
}
