import unittest

from bilten_plugin import Event, drop, keep
from plugin import check


class PluginTest(unittest.TestCase):
    def test_test_events_are_dropped_and_the_rest_kept(self):
        self.assertEqual(check(Event(event_type="test_event", organizer_id="org-1"), {}), drop())
        self.assertEqual(check(Event(event_type="purchase", organizer_id="org-1"), {}), keep())


if __name__ == "__main__":
    unittest.main()
