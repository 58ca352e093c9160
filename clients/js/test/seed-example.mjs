// The seed document's example, verbatim (with its import): it neither
// flushes nor closes, so its events are sent when Node is about to exit.
import { AnalyticsIngestionService } from '@bilten/analytics'

const analytics = new AnalyticsIngestionService();

// Track user events
await analytics.trackEvent({
    event_type: 'page_view',
    event_name: 'Event Details Page',
    organizer_id: 'org-123',
    user_id: 'user-456',
    properties: {
        event_id: 'evt-789',
        browser: 'Chrome',
        device_type: 'desktop'
    }
});

// Track ticket sales
await analytics.trackTicketSale({
    event_id: 'evt-789',
    organizer_id: 'org-123',
    user_id: 'user-456',
    quantity: 2,
    price: 50.00,
    currency: 'USD'
});
