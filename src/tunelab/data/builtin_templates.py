"""Templates and slot values behind tunelab's built-in customer-support messages.

Each intent has message templates with `{slots}`; `builtin.py` fills them with seeded random
choices. Intents come in confusable pairs on purpose (cancel an order vs a subscription, a refund
vs a double charge, a late parcel vs a damaged one) so a classifier must read the whole message,
not one keyword. Both built-in datasets use these messages (the replies of `support_instructions`
live in `builtin_replies.py`), so any change here changes `support_intents` too.
"""

SLOTS = {
    "product": [
        "blue running shoes", "wireless headphones", "coffee grinder", "phone case", "winter jacket",
        "desk lamp", "yoga mat", "backpack", "smart watch", "kettle", "gaming mouse", "bed sheets",
        "water bottle", "laptop stand", "air fryer", "sunglasses", "bluetooth speaker", "office chair",
    ],
    "order": ["#{n}", "number {n}", "{n}", "no. {n}", "ID {n}"],
    "when": [
        "last week", "three days ago", "on Monday", "yesterday", "two weeks ago", "on the 3rd",
        "over a week ago", "earlier this month", "on Friday",
    ],
    "plan": ["premium membership", "monthly subscription", "annual plan", "Plus plan", "subscription box",
             "streaming add-on", "family plan"],
    "city": ["Leeds", "Austin", "Lyon", "Toronto", "Melbourne", "Dublin", "Denver", "Porto", "Oslo"],
    "card": ["credit card", "debit card", "Visa", "Mastercard", "PayPal account", "bank card"],
    "amount": ["$24.99", "$89", "$12.50", "$140", "$7.99", "$55", "$230"],
}

# Background sentences real tickets carry. They are shared by every intent and mention other
# intents' topics (orders, plans, payments, addresses), so only the request itself tells the intent.
CONTEXTS = [
    "I ordered a {product} {when}.", "I paid with my {card}.", "I have the {plan}.", "I live in {city}.",
    "My order number is {order}.", "I've been a customer for years.", "I bought a {product} as a gift.",
    "I moved recently.", "I use the app on my phone.", "The total was {amount}.", "I got an email from you {when}.",
    "I also have the {plan} on my account.", "I already spoke to someone {when}.", "This is my second order this month.",
    "The {product} was on sale.", "My partner shares the account.", "I'm writing from {city}.",
    "I checked the website first.", "I ordered the {product} and a {product} together.", "I'm travelling next week.",
]

OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Hi there, ", "Excuse me, ", "Quick question: "]
CLOSERS = ["", "", "", " Thanks.", " Thank you!", " Please help.", " Thanks in advance.", " Any update?", " Cheers."]

INTENTS = {
    "order_status": [
        "where is my order {order}?",
        "can you tell me when my {product} will arrive?",
        "I ordered a {product} {when} and want to know where it is",
        "what's the tracking status of order {order}",
        "has my order shipped yet?",
        "how do I track the {product} I bought {when}",
        "is order {order} on its way?",
        "when will my package be delivered",
        "my order {order} still says processing, has it been sent?",
        "i need an update on the delivery date for my {product}",
        "could you check the status of my purchase from {when}",
    ],
    "delivery_problem": [
        "my {product} arrived damaged",
        "the box for order {order} was crushed and the {product} is broken",
        "I received the wrong item, I ordered a {product}",
        "tracking says delivered but nothing arrived",
        "part of order {order} is missing",
        "the {product} came scratched and the packaging was torn",
        "the courier left my parcel in the rain and the {product} is ruined",
        "I got someone else's package instead of my {product}",
        "only one of the two items in order {order} showed up",
        "the {product} i received doesn't work out of the box",
    ],
    "cancel_order": [
        "please cancel order {order}",
        "I want to cancel the {product} I ordered {when}",
        "can I still cancel my order before it ships?",
        "cancel my last purchase please",
        "I ordered the {product} by mistake, please cancel it",
        "how do I cancel order {order}",
        "stop my order {order}, I don't need it anymore",
        "i changed my mind about the {product}, cancel the order",
        "is it too late to cancel what I bought {when}?",
    ],
    "cancel_subscription": [
        "I want to cancel my {plan}",
        "how do I stop my {plan} from renewing",
        "please end my {plan} at the end of this month",
        "cancel my membership, I don't use it anymore",
        "turn off auto-renew on my {plan}",
        "I'd like to unsubscribe from the {plan}",
        "how can I close my {plan} without being charged again",
        "stop billing me for the {plan}",
        "i no longer want the {plan}, please cancel it",
    ],
    "refund_request": [
        "I'd like a refund for my {product}",
        "how do I return the {product} and get my money back",
        "can I send back order {order} for a refund",
        "I returned the {product} {when}, when will I get my refund?",
        "the {product} doesn't fit, I want to return it",
        "what's your return policy for the {product}",
        "please refund order {order}, I'm not happy with it",
        "I want my money back for the {product}",
        "where is the refund for the item I sent back {when}",
        "can I exchange the {product} or get a refund",
    ],
    "payment_issue": [
        "my {card} was charged twice for order {order}",
        "the payment keeps failing at checkout",
        "why was I charged {amount} when the total was lower",
        "my {card} was declined but the money left my account",
        "I see an unknown charge of {amount} on my {card}",
        "checkout won't accept my {card}",
        "I was billed {amount} twice {when}",
        "the discount code didn't apply and I paid full price",
        "how do I update the {card} on my account for payments",
        "there's a pending charge of {amount} that I didn't authorise",
    ],
    "change_address": [
        "I need to change the delivery address for order {order}",
        "can I ship my {product} to a different address",
        "I moved to {city}, please update my shipping address",
        "wrong address on order {order}, can you fix it",
        "please send the {product} to my office instead",
        "how do I edit my address before the order ships",
        "update the address on my account to my new place in {city}",
        "can you redirect the parcel to {city}",
        "I typed my street number wrong for order {order}",
    ],
    "account_access": [
        "I can't log in to my account",
        "I forgot my password",
        "the password reset email never arrives",
        "my account is locked after too many attempts",
        "how do I change the email on my account",
        "I'm not getting the two-factor code",
        "it says my account doesn't exist but I have ordered before",
        "someone else may have accessed my account",
        "the app keeps logging me out",
        "how do I reset my password on the app",
    ],
    "product_question": [
        "is the {product} in stock?",
        "does the {product} come in other colours",
        "what size should I get for the {product}",
        "is the {product} waterproof?",
        "how long is the warranty on the {product}",
        "when will the {product} be back in stock",
        "does the {product} ship to {city}?",
        "what's the difference between the two {product} models",
        "is the {product} compatible with my phone",
        "how heavy is the {product}",
    ],
    "speak_to_human": [
        "I want to talk to a real person",
        "can I speak to an agent please",
        "get me a human, the bot isn't helping",
        "how do I call customer service",
        "connect me to someone from support",
        "is there a phone number I can ring",
        "I need a manager about order {order}",
        "transfer me to a live agent",
        "this chat is useless, let me speak to staff",
    ],
}
