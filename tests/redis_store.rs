//! (being written: RedisStore against StoreModel)
