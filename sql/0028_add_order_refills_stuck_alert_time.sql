-- When a refill still open after SMM_ORDER_STUCK_AFTER_H was reported to staff (the stuck check's
-- smm.orders.alert.stuck, once per refill, as orders.stuck_alert_time): staff end it
-- (OrdersService.EndRefill) so its customer may ask for another.
ALTER TABLE order_refills ADD COLUMN stuck_alert_time timestamptz;
