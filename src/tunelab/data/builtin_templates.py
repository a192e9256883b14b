"""Templates and slot values behind tunelab's built-in customer-support data.

Each intent has message templates with `{slots}`; `builtin.py` fills them with seeded random
choices. Intents come in confusable pairs on purpose (cancel an order vs a subscription,
a refund vs a double charge, a late parcel vs a damaged one) so a classifier must read the
whole message, not one keyword.
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

# Agent replies for the instruction data: one or more per intent, filled with the same slots.
REPLIES = {
    "order_status": [
        "Thanks for reaching out. Order {order} has shipped and is with the courier; you can follow it "
        "with the tracking link in your confirmation email. Most parcels arrive within 3-5 working days.",
        "I've checked your order {order}: it is packed and will leave our warehouse within 24 hours. "
        "You'll get an email with the tracking number as soon as it ships.",
    ],
    "delivery_problem": [
        "I'm sorry your {product} arrived like that. I've logged a claim for order {order}; a replacement "
        "will ship today at no cost, and you don't need to send the damaged item back.",
        "Sorry about that. Please reply with a photo of what you received and I'll send the correct "
        "{product} right away, with a prepaid label for the wrong item.",
    ],
    "cancel_order": [
        "Done: order {order} is cancelled before dispatch, and the full amount goes back to your original "
        "payment method within 3-5 working days.",
        "Order {order} has already shipped, so I can't cancel it, but you can refuse the delivery or return "
        "it free within 30 days for a full refund.",
    ],
    "cancel_subscription": [
        "I've turned off renewal for your {plan}. You keep access until the end of the current billing "
        "period and won't be charged again.",
        "Your {plan} is cancelled. A confirmation email is on its way, and no further payments will be taken.",
    ],
    "refund_request": [
        "You can return the {product} within 30 days. I've emailed a prepaid return label for order "
        "{order}; once it reaches us, the refund takes 3-5 working days.",
        "Your return for order {order} has arrived and the refund of {amount} was issued today. It can take "
        "up to 5 working days to appear on your statement.",
    ],
    "payment_issue": [
        "I can see the duplicate charge of {amount} on order {order}. I've reversed it; the money will be back "
        "on your {card} within 3-5 working days.",
        "The failed attempt shows as a pending charge of {amount} that your bank will release automatically "
        "within a few days. Please try checkout again or use a different {card}.",
    ],
    "change_address": [
        "I've updated the delivery address for order {order} to your new address in {city}. The parcel "
        "hasn't shipped yet, so it will go straight there.",
        "Order {order} is already with the courier, so I've asked them to redirect it to {city}. You'll get "
        "an updated tracking email shortly.",
    ],
    "account_access": [
        "I've sent a new password reset link to the email on your account; it's valid for one hour. If it "
        "doesn't arrive, please check your spam folder.",
        "Your account was locked after several failed attempts. I've unlocked it, and I recommend resetting "
        "your password and turning on two-factor authentication.",
    ],
    "product_question": [
        "Good question. The {product} is in stock in every size and colour shown on its page, ships within "
        "one working day and has a two-year warranty; the product page lists its exact measurements.",
        "The {product} is out of stock right now; we expect new stock in about two weeks. Its product page "
        "has the full specifications, and I can email you when it's back.",
    ],
    "speak_to_human": [
        "Of course. I'm connecting you with a support agent now; the current wait is about 5 minutes. You can "
        "also call us on weekdays from 9am to 6pm.",
        "I've passed your request about order {order} to a team lead, who will call you back today.",
    ],
}

SUMMARIES = {
    "order_status": "The customer wants to know where their order is.",
    "delivery_problem": "The customer received a damaged, wrong or incomplete delivery.",
    "cancel_order": "The customer wants to cancel an order.",
    "cancel_subscription": "The customer wants to cancel a subscription.",
    "refund_request": "The customer wants to return an item and get a refund.",
    "payment_issue": "The customer has a problem with a payment or charge.",
    "change_address": "The customer wants to change a delivery address.",
    "account_access": "The customer cannot access their account.",
    "product_question": "The customer has a question about a product.",
    "speak_to_human": "The customer wants to talk to a human agent.",
}

INSTRUCTIONS = {
    "reply": [
        "Reply to this customer message as a friendly support agent.",
        "Write a short, helpful reply to the customer.",
        "You are a customer support agent. Answer the message below.",
    ],
    "summarize": [
        "Summarize the customer's request in one sentence.",
        "In one sentence, what does this customer want?",
    ],
    "classify": [
        "Which support intent does this message belong to? Answer with the intent name.",
        "Label the customer message with one intent: " + ", ".join(INTENTS) + ".",
    ],
}
