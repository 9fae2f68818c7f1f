DROP TABLE subscription_discounts;
DROP TABLE promotion_codes;
DROP TABLE coupons;
