-- The demo shop: customers, their orders, the items in them and their shipments.
-- Loaded by agentlab.demo.database.create_demo_database into a fresh DuckDB file.

CREATE TABLE customers (
    customer_id VARCHAR PRIMARY KEY,  -- like 'C-001'
    name VARCHAR NOT NULL,
    email VARCHAR NOT NULL UNIQUE,
    tier VARCHAR NOT NULL CHECK (tier IN ('standard', 'silver', 'gold'))
);

CREATE TABLE orders (
    order_id VARCHAR PRIMARY KEY,  -- like 'O-1001'
    customer_id VARCHAR NOT NULL REFERENCES customers (customer_id),
    placed_on DATE NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled')),
    total_usd DECIMAL(10, 2)  -- the sum of the order's items, filled in below
);

CREATE TABLE order_items (
    order_id VARCHAR NOT NULL REFERENCES orders (order_id),
    product VARCHAR NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_usd DECIMAL(10, 2) NOT NULL
);

CREATE TABLE shipments (
    order_id VARCHAR PRIMARY KEY REFERENCES orders (order_id),
    carrier VARCHAR NOT NULL,
    tracking_number VARCHAR NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('label created', 'in transit', 'out for delivery', 'delivered')),
    eta DATE NOT NULL  -- the delivery date once delivered
);

INSERT INTO customers VALUES
    ('C-001', 'Ana Lima', 'ana@example.com', 'gold'),
    ('C-002', 'Bob Stone', 'bob@example.com', 'standard'),
    ('C-003', 'Carla Mendes', 'carla.m@example.com', 'silver'),
    ('C-004', 'Dan Okafor', 'dan@example.com', 'standard'),
    ('C-005', 'Eve Martin', 'eve@example.com', 'gold'),
    ('C-006', 'Farid Haddad', 'farid.h@example.com', 'silver'),
    ('C-007', 'Grace Kim', 'grace.kim@example.com', 'standard'),
    ('C-008', 'Hugo Silva', 'hugo@example.com', 'standard');

INSERT INTO orders (order_id, customer_id, placed_on, status) VALUES
    ('O-1001', 'C-001', DATE '2026-10-02', 'delivered'),
    ('O-1002', 'C-002', DATE '2026-10-05', 'delivered'),
    ('O-1003', 'C-001', DATE '2026-10-19', 'delivered'),
    ('O-1004', 'C-004', DATE '2026-10-21', 'delivered'),
    ('O-1005', 'C-003', DATE '2026-10-28', 'cancelled'),
    ('O-1006', 'C-006', DATE '2026-11-03', 'delivered'),
    ('O-1007', 'C-002', DATE '2026-11-10', 'shipped'),
    ('O-1008', 'C-005', DATE '2026-11-12', 'delivered'),
    ('O-1009', 'C-007', DATE '2026-11-14', 'shipped'),
    ('O-1010', 'C-008', DATE '2026-11-15', 'cancelled'),
    ('O-1011', 'C-003', DATE '2026-11-17', 'shipped'),
    ('O-1012', 'C-006', DATE '2026-11-18', 'shipped'),
    ('O-1013', 'C-001', DATE '2026-11-19', 'shipped'),
    ('O-1014', 'C-005', DATE '2026-11-20', 'shipped'),
    ('O-1015', 'C-004', DATE '2026-11-21', 'shipped'),
    ('O-1016', 'C-008', DATE '2026-11-22', 'processing'),
    ('O-1017', 'C-002', DATE '2026-11-23', 'processing'),
    ('O-1018', 'C-007', DATE '2026-11-23', 'processing'),
    ('O-1019', 'C-005', DATE '2026-11-24', 'processing'),
    ('O-1020', 'C-003', DATE '2026-11-24', 'processing');

INSERT INTO order_items VALUES
    ('O-1001', 'Ceramic mug, blue', 2, 12.50),
    ('O-1001', 'Pour-over coffee filter', 1, 17.90),
    ('O-1002', 'Wireless mouse', 1, 24.99),
    ('O-1003', 'A5 dotted notebook', 3, 9.50),
    ('O-1004', 'Desk lamp', 1, 39.00),
    ('O-1004', 'LED bulb', 2, 6.25),
    ('O-1005', 'Yoga mat', 1, 29.95),
    ('O-1006', 'Noise-cancelling headphones', 1, 149.00),
    ('O-1007', 'Mechanical keyboard', 1, 89.00),
    ('O-1007', 'Keycap puller', 1, 4.50),
    ('O-1008', 'Linen throw pillow', 2, 22.00),
    ('O-1009', 'Water bottle, 750 ml', 1, 18.00),
    ('O-1009', 'Bike bell', 1, 7.49),
    ('O-1010', 'Phone case', 1, 15.99),
    ('O-1011', 'Running shoes', 1, 95.00),
    ('O-1012', 'Espresso cups, set of 4', 1, 32.00),
    ('O-1013', 'Fountain pen', 1, 45.00),
    ('O-1013', 'Ink cartridges, 10 pack', 2, 6.99),
    ('O-1014', 'Wool scarf', 1, 38.50),
    ('O-1015', 'USB-C charger, 65 W', 1, 42.00),
    ('O-1015', 'USB-C cable, 2 m', 2, 9.99),
    ('O-1016', 'Board game', 1, 34.90),
    ('O-1017', 'Monitor stand', 1, 54.00),
    ('O-1018', 'Hiking socks, 3 pack', 1, 21.00),
    ('O-1019', 'Scented candle', 3, 14.00),
    ('O-1020', 'Backpack, 20 l', 1, 64.00);

UPDATE orders SET total_usd = (
    SELECT sum(i.quantity * i.unit_price_usd) FROM order_items i WHERE i.order_id = orders.order_id
);

INSERT INTO shipments VALUES
    ('O-1001', 'UPS', '1Z999AA10123456784', 'delivered', DATE '2026-10-07'),
    ('O-1002', 'USPS', '9400111899223197428490', 'delivered', DATE '2026-10-10'),
    ('O-1003', 'DHL', 'JD014600006281234567', 'delivered', DATE '2026-10-23'),
    ('O-1004', 'FedEx', '771234567890', 'delivered', DATE '2026-10-26'),
    ('O-1006', 'UPS', '1Z999AA10123459012', 'delivered', DATE '2026-11-07'),
    ('O-1007', 'DHL', 'JD014600006289876543', 'in transit', DATE '2026-11-27'),
    ('O-1008', 'USPS', '9400111899223197431155', 'delivered', DATE '2026-11-17'),
    ('O-1009', 'FedEx', '771234509876', 'out for delivery', DATE '2026-11-25'),
    ('O-1011', 'UPS', '1Z999AA10123461122', 'in transit', DATE '2026-11-26'),
    ('O-1012', 'DHL', 'JD014600006281112223', 'in transit', DATE '2026-11-28'),
    ('O-1013', 'USPS', '9400111899223197433377', 'in transit', DATE '2026-11-27'),
    ('O-1014', 'FedEx', '771234522222', 'label created', DATE '2026-11-29'),
    ('O-1015', 'UPS', '1Z999AA10123463344', 'in transit', DATE '2026-11-28');
