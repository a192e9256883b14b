"""Templates behind ``support_tickets``: 32 fine-grained intents in families of look-alikes.

Where ``support_intents`` has 10 intents in confusable pairs, these split each topic further, so
that the words a message shares with its neighbours (refund, cancel, change, card, password) no
longer decide the label: a refund asked for vs a refund awaited vs a refund of a price difference,
a parcel that is late vs lost vs not yet ordered, an item that arrived broken vs stopped working.
Slots, background sentences, openers, closers and noise are those of ``builtin_templates.py``;
``{other_product}`` and ``{other_plan}`` take a different value than ``{product}`` and ``{plan}``.
"""

FAMILIES = {
    "delivery": ["track_order", "delivery_late", "parcel_lost", "shipping_time"],
    "items": ["item_damaged", "item_defective", "wrong_item", "missing_item"],
    "returns": ["return_item", "exchange_item", "refund_request", "refund_status"],
    "orders": ["cancel_order", "change_order", "change_shipping_address", "reorder"],
    "plans": ["cancel_subscription", "pause_subscription", "change_plan", "renewal_charge"],
    "payments": ["charged_twice", "card_declined", "update_payment_method", "invoice_request"],
    "prices": ["promo_code", "price_drop"],
    "account": ["reset_password", "account_locked", "change_email", "delete_account", "unsubscribe_emails",
                "speak_to_human"],
}

TICKET_INTENTS = {
    # --- delivery: where is it, why is it late, it never came, how long would it take
    "track_order": [
        "where is my order {order}", "can you tell me where my {product} is right now",
        "has my order {order} shipped yet", "I'd like the tracking link for my {product}",
        "what's the current status of order {order}", "is my {product} on its way",
        "can I see where the parcel is", "which courier has my order {order}",
    ],
    "delivery_late": [
        "my {product} was due {when} and still isn't here", "the delivery date has passed and no parcel",
        "order {order} should have arrived by now, why the delay", "it's days past the estimated delivery date",
        "the {product} is late, it was promised for {when}", "why is my order taking so much longer than you said",
        "still waiting on order {order}, it's overdue",
    ],
    "parcel_lost": [
        "tracking says delivered but nothing arrived", "the courier marked order {order} as delivered and I never got it",
        "my {product} shows as delivered {when} but it's not here", "I think the parcel got lost, tracking hasn't moved in two weeks",
        "the app says the {product} was handed over but no one here received it",
        "order {order} says delivered to a neighbour but none of them has it",
    ],
    "shipping_time": [
        "how long does delivery to {city} take", "if I order the {product} today when would it arrive",
        "do you ship to {city} and how fast", "what are the delivery times before I place an order",
        "can you deliver a {product} by the weekend if I buy it now", "how many days is standard shipping",
        "is there express delivery to {city}",
    ],
    # --- items: broken on arrival, broke later, not what was ordered, not all there
    "item_damaged": [
        "the {product} arrived broken", "my {product} came with a cracked case", "the box was crushed and the {product} inside is damaged",
        "the {product} was scratched when I opened the parcel", "order {order} arrived smashed",
        "the {product} was already dented out of the box",
    ],
    "item_defective": [
        "the {product} stopped working after a week", "my {product} worked at first and now won't turn on",
        "the {product} keeps switching itself off since {when}", "after a few uses the {product} is faulty",
        "the {product} I bought {when} has started making a strange noise", "the battery of my {product} no longer charges",
    ],
    "wrong_item": [
        "I ordered a {product} but received a {other_product}", "you sent me the wrong size",
        "order {order} contains someone else's item", "the colour I got is not the one I ordered",
        "this isn't the {product} I paid for", "the parcel had a different model of {product} than my order",
    ],
    "missing_item": [
        "one item was missing from order {order}", "I ordered two things and only the {product} came",
        "the {product} wasn't in the box", "the parcel arrived but half the order is not there",
        "order {order} came without the charger that should be included", "the {product} is listed on the packing slip but missing",
    ],
    # --- returns: send back, swap, money back, where is the money
    "return_item": [
        "how do I send the {product} back", "I'd like to return order {order}", "can I return the {product} I bought {when}",
        "where do I get a return label", "what is your returns process for the {product}",
        "I want to return it, it doesn't suit me",
    ],
    "exchange_item": [
        "can I swap the {product} for a bigger size", "I'd like to exchange the {product} for another colour",
        "could you replace it with the next size up instead of a refund", "I want a different model instead of this {product}",
        "can I trade the {product} from order {order} for a different one", "exchange please, not a refund, it's just the wrong fit",
    ],
    "refund_request": [
        "I want my money back for the {product}", "please refund order {order}", "can I get a refund for the {product}",
        "I'd like a refund of the {amount} I paid", "refund me, I don't want the {product} anymore",
        "I'm asking for a full refund on order {order}",
    ],
    "refund_status": [
        "I returned the {product} {when}, where is my refund", "my refund for order {order} still hasn't arrived",
        "you said the refund was processed but I don't see the {amount}", "how long until the refund reaches my {card}",
        "it's been weeks since my return was received and no money yet", "when will the refund for {order} show up",
    ],
    # --- orders: stop it, alter it, send it elsewhere, buy again
    "cancel_order": [
        "please cancel order {order}", "I want to cancel the {product} I ordered {when}", "cancel my order before it ships",
        "I ordered by mistake, cancel it", "can I still cancel order {order}", "I no longer need the {product}, please cancel the order",
    ],
    "change_order": [
        "can I add a {product} to order {order}", "I need to change the size on my order before it ships",
        "please remove the {product} from my order", "can I change the quantity on order {order}",
        "I want to switch the colour of the {product} I just ordered", "could you update my order to include a {product}",
    ],
    "change_shipping_address": [
        "please send order {order} to a different address", "I need to change the delivery address to {city}",
        "can you update where the {product} is shipped", "wrong address on my order, I moved to {city}",
        "deliver my parcel to my office instead", "can the courier deliver order {order} to my new flat",
    ],
    "reorder": [
        "I want to buy the same {product} again", "how do I repeat my last order", "can I reorder order {order}",
        "I'd like another {product} like the one I got {when}", "please order the same items as last time",
        "is there a button to buy my previous order again",
    ],
    # --- plans: end it, pause it, change it, why was I charged for it
    "cancel_subscription": [
        "cancel my {plan}", "I want to end my {plan} for good", "stop my {plan} from renewing",
        "how do I close my {plan}", "please terminate the {plan} on my account", "I'm done with the {plan}, cancel it",
    ],
    "pause_subscription": [
        "can I pause my {plan} for a month", "I don't want to cancel, just skip next month's {plan}",
        "put my {plan} on hold while I'm away", "can I freeze the {plan} until {when}",
        "suspend the {plan} for a few weeks please", "is it possible to take a break from the {plan}",
    ],
    "change_plan": [
        "I want to upgrade to the {plan}", "switch me from the {plan} to the {other_plan}", "can I downgrade my {plan}",
        "how do I move to a cheaper plan", "change my {plan} to the annual one", "I'd like a bigger plan than the {plan}",
    ],
    "renewal_charge": [
        "I was charged {amount} for a renewal I didn't expect", "why did my {plan} renew automatically",
        "you took {amount} for the {plan} after I thought it ended", "I got billed for another year of the {plan}",
        "there's a renewal charge on my {card} I don't recognise", "the {plan} renewed without any reminder",
    ],
    # --- payments: twice, refused, new card, paperwork
    "charged_twice": [
        "I was charged twice for order {order}", "my {card} shows two payments of {amount}", "you billed me double for the {product}",
        "the same payment went through two times", "there's a duplicate charge of {amount}", "I paid once but got charged twice",
    ],
    "card_declined": [
        "my {card} keeps getting declined", "payment failed at checkout", "why won't my {card} go through",
        "the site says my payment was refused", "I can't pay, it says transaction declined", "checkout rejects my {card} every time",
    ],
    "update_payment_method": [
        "I need to update my {card} details", "how do I change the card on my account", "my card expired, where do I add the new one",
        "replace my {card} with a different one", "I want to pay with my {card} from now on", "remove the old card and save a new one",
    ],
    "invoice_request": [
        "can I get an invoice for order {order}", "I need a receipt for the {product}", "please send a VAT invoice for {amount}",
        "where can I download my invoice", "my company needs an invoice with our details", "I need proof of purchase for order {order}",
    ],
    # --- prices: a code, a lower price
    "promo_code": [
        "my discount code isn't working", "the promo code says invalid at checkout", "I forgot to apply my voucher to order {order}",
        "the coupon didn't take anything off the {amount}", "how do I use the discount code you emailed {when}",
        "the 20% code won't apply to the {product}",
    ],
    "price_drop": [
        "the {product} is cheaper now than when I bought it", "the price dropped {when}, can I get the difference back",
        "I paid {amount} and now it's on sale", "do you price match, I saw the {product} for less",
        "refund the difference, the price went down right after my order", "the {product} got discounted a day after I paid full price",
    ],
    # --- account: password, locked out, email, delete, mails, a human
    "reset_password": [
        "I forgot my password", "how do I reset my password", "the password reset email never arrives",
        "I need a new password for my account", "the reset link says it has expired", "can you send me a password reset link",
    ],
    "account_locked": [
        "my account is locked", "I've been locked out after too many attempts", "it says my account is suspended",
        "I reset my password and still can't get in, it says account blocked", "my login is blocked",
        "the app says my account has been disabled",
    ],
    "change_email": [
        "I want to change the email on my account", "update my email address please", "I no longer use that email, how do I change it",
        "my account is under my old work email, switch it", "can I log in with a different email address",
        "change the address you send my emails to",
    ],
    "delete_account": [
        "delete my account", "please remove all my data and close my account", "I want my account erased",
        "how do I permanently delete my profile", "close my account for good, I won't use it again",
        "I'd like my personal data deleted under GDPR",
    ],
    "unsubscribe_emails": [
        "stop sending me marketing emails", "how do I unsubscribe from your newsletter", "I get too many promotional emails",
        "take me off your mailing list", "I keep getting offers by email, make it stop", "opt me out of the newsletters",
    ],
    "speak_to_human": [
        "I want to speak to a real person", "can I talk to an agent", "put me through to a human please",
        "is there a phone number I can call", "I'd rather talk to someone than a bot", "connect me with customer service staff",
    ],
}

# Background sentences about each intent's topic that ask for nothing. A message gets one about a
# look-alike of its own intent (a refund that went fine before, a parcel that was late last time),
# so the words of the wrong intent are in the message and only its request tells the label.
MENTIONS = {
    "track_order": ["The tracking page worked fine for my last parcel.", "I can see where my other order is."],
    "delivery_late": ["My last delivery was a day late, which was fine.", "Deliveries here are often slow."],
    "parcel_lost": ["A parcel of mine got lost once before.", "Last time the courier left it with a neighbour."],
    "shipping_time": ["Your site says standard shipping takes 3 to 5 days.", "I chose express delivery at checkout."],
    "item_damaged": ["The box itself arrived in perfect condition.", "Last year a parcel of yours came crushed."],
    "item_defective": ["The {product} works perfectly otherwise.", "My old {product} broke after two years."],
    "wrong_item": ["It is the right model and colour.", "Once before you sent me the wrong size."],
    "missing_item": ["Everything was in the box.", "Last order something was missing, but you fixed it."],
    "return_item": ["I returned a {product} last year without trouble.", "I kept the original packaging."],
    "exchange_item": ["I'm not looking to swap it.", "I exchanged a jacket with you before."],
    "refund_request": ["I was refunded for a {product} before.", "I asked for a refund once, years ago."],
    "refund_status": ["My last refund arrived quickly.", "The refund for my other order came through fine."],
    "cancel_order": ["I don't want to cancel anything.", "I cancelled an order once before."],
    "change_order": ["The order itself is correct.", "I changed an order with you once before."],
    "change_shipping_address": ["My address hasn't changed.", "I updated my address {when}."],
    "reorder": ["I've ordered the {product} from you before.", "I buy the same things every month."],
    "cancel_subscription": ["I'm happy with the {plan}.", "I cancelled a different plan last year."],
    "pause_subscription": ["I paused the {plan} once when I travelled.", "I don't need a break from the {plan}."],
    "change_plan": ["I've been on the same plan for years.", "I upgraded my plan {when}."],
    "renewal_charge": ["My {plan} renews every year.", "The renewal price was fine last time."],
    "charged_twice": ["I was only charged once for my last order.", "My bank statement looks normal."],
    "card_declined": ["My {card} works everywhere else.", "Payment went through fine last time."],
    "update_payment_method": ["My card details are up to date.", "I added a new {card} {when}."],
    "invoice_request": ["I got an invoice by email for my last order.", "I don't need a receipt."],
    "promo_code": ["I had a discount code last time that worked.", "I didn't use any voucher."],
    "price_drop": ["The price seems fair to me.", "I saw the {product} on sale {when}."],
    "reset_password": ["I know my password.", "I changed my password {when}."],
    "account_locked": ["My account works fine on the website.", "I was locked out once before."],
    "change_email": ["My email hasn't changed.", "I updated my email address last year."],
    "delete_account": ["I want to keep my account.", "I deleted an old account of mine before."],
    "unsubscribe_emails": ["I like your newsletter.", "I unsubscribed from the offers a while ago."],
    "speak_to_human": ["Your chat bot was helpful last time.", "I spoke to someone on the phone {when}."],
}
