"""The store and the 20-turn conversation replayed by ``memstore bench prefix`` (written for memstore).

One user, Ana: custom instructions, five style rules, two pinned facts and 44 ordinary memories on the topics
the conversation touches (food, travel, running, work, family, money, home), so each turn recalls different
memories. The assistant's replies are scripted (they follow her rules: lowercase, metric units, no closing
question) so the history each request carries is realistic in length.
"""

from __future__ import annotations

USER = "ana"

APP_PROMPT = (
    "You are Compass, a personal assistant inside a note-taking app. Be accurate and practical. When the user "
    "asks for a plan, give concrete steps with times and quantities. When you are unsure, say so plainly. Do "
    "not invent prices, opening hours or timetables: tell the user where to check them. Keep medical and "
    "financial answers general and suggest a professional when the question needs one."
)

ABOUT_USER = ("I'm Ana, a night-shift nurse in Porto. I cook most evenings, run three times a week and I'm "
              "learning German for a move to Vienna next year.")
RESPONSE_STYLE = "Warm but brief. Skip the pleasantries and get to the point."

RULES = [
    "Never use capital letters",
    "Use metric units",
    "Don't end with a follow-up question",
    "Answer in at most 5 bullet points",
    "Never recommend fish or shellfish",
]

PINNED = [
    "I am severely allergic to shellfish and carry an EpiPen",
    "My partner is Rui; we live together in Bonfim, Porto",
]

MEMORIES = [
    # food and cooking
    "I'm vegetarian on weekdays and eat meat only at weekends",
    "I hate coriander; it tastes like soap to me",
    "I have a cast-iron pan and a small oven that runs hot",
    "Rui is lactose intolerant",
    "My favourite dish is my grandmother's caldo verde",
    "I bake sourdough every Saturday; the starter is called Bolinha",
    "I'm trying to eat less sugar after a borderline glucose test in March",
    # running
    "I'm training for the Porto half marathon in November",
    "My easy pace is about 6:10 per km and my 10 km best is 52 minutes",
    "I had shin splints last spring after increasing mileage too fast",
    "I run with the Foz running club on Thursday evenings",
    "My running shoes are Brooks Ghost, bought in February",
    # work and sleep
    "I work night shifts on the cardiology ward, usually four nights in a row",
    "I sleep from 9:00 to 15:00 after night shifts and use blackout curtains",
    "I drink too much coffee on night shifts, usually four cups",
    "My ward manager is called Helena",
    "I'm studying for a critical care certification exam in January",
    # travel
    "We are planning a weekend in the Douro valley in October",
    "I get carsick on winding roads, so I prefer trains",
    "Rui doesn't drive; neither of us has a car",
    "We visited Pinhão two years ago and loved the river boat trip",
    "I prefer small guesthouses to big hotels",
    "My budget for the Douro weekend is about 400 euros for both of us",
    # German and the move
    "I'm at A2 level in German and take classes on Tuesday mornings",
    "We plan to move to Vienna in September next year",
    "My German tutor is called Jonas and teaches online",
    "I need my nursing diploma recognised in Austria before the move",
    "I use the Anki app for German vocabulary, 20 new cards a day",
    # family and friends
    "My sister Marta lives in Braga and has two kids, Tomás and Leonor",
    "My mother's birthday is on 14 October",
    "My best friend Inês is a vegan",
    "We host a dinner for six friends on the first Saturday of each month",
    # home and money
    "Our flat has a small balcony where I grow tomatoes and basil",
    "I save 300 euros a month towards the Vienna move",
    "We pay 850 euros a month in rent",
    "I want to buy a second-hand road bike for commuting",
    "My bike commute would be 7 km each way, mostly downhill in the morning",
    "I have a cat called Pimenta who is 11 years old",
    "Pimenta needs a kidney-friendly diet",
    # health
    "I take vitamin D in winter because of the night shifts",
    "I have mild asthma that flares up in cold, damp weather",
    "My knees ache on long downhill runs",
    "I'm short-sighted and wear contact lenses when I run",
    "I try to keep my weekly running distance under 40 km",
]

# (user message, scripted assistant reply): twenty turns of one conversation
CONVERSATION = [
    ("Morning! I just got off a night shift. What should I eat before I sleep so I don't wake up starving at 2pm?",
     "- a small bowl of oats with milk or yogurt and a spoon of peanut butter: slow carbs plus protein\n"
     "- or two slices of your sourdough with eggs, if you want something warmer\n"
     "- keep it to about 300-400 kcal so digestion doesn't keep you up\n"
     "- skip coffee from here on and drink a glass of water\n"
     "- leave a banana by the bed in case you wake up hungry"),
    ("Good call on the oats. Tonight we have friends over. Can you plan a dinner for six?",
     "- starter: caldo verde, your grandmother's recipe, made the day before so it tastes better\n"
     "- main: mushroom and chestnut stew with rice, which is vegan and so fine for inês\n"
     "- use olive oil instead of butter everywhere, so rui has no lactose to worry about\n"
     "- dessert: baked apples with cinnamon and walnuts, no cream\n"
     "- shopping: 1.5 kg mushrooms, 400 g cooked chestnuts, 6 apples, 1 kg potatoes, kale"),
    ("Nice. How long will the stew take and can I make it in my cast-iron pan?",
     "- total about 1 hour 15 minutes: 20 minutes prep, 55 minutes simmering\n"
     "- yes, the cast-iron pan works, but it holds about 3 litres, so cook in two batches for six people\n"
     "- brown the mushrooms in batches on high heat so they don't steam\n"
     "- keep the lid half on and stir every 10 minutes so nothing catches on the bottom\n"
     "- if your oven runs hot, finish it on the hob rather than in the oven"),
    ("What wine goes with that? Nothing too expensive.",
     "- a young douro red (touriga nacional blend) at 8-12 euros a bottle suits earthy mushrooms\n"
     "- a dry white from the vinho verde region works if people prefer something lighter\n"
     "- plan on one bottle for every two or three people, so three bottles for six\n"
     "- serve the red slightly cool, around 16 °c, 20 minutes in the fridge\n"
     "- inês may want to check that the wine is vegan, as some are fined with egg or fish products"),
    ("Switching topics: I want to run tomorrow after sleeping. How far should I go this week?",
     "- you're building towards the half marathon, so keep this week around 30-35 km in total\n"
     "- tomorrow: an easy 8 km at about 6:10 per km, after you've eaten and had some water\n"
     "- thursday with the foz club: let that be your quality session\n"
     "- sunday: a long run of 14 km at easy pace\n"
     "- watch your shins: if you feel the old pain, cut the run short rather than pushing through"),
    ("My knees were sore on the last long run, mostly going downhill by the river.",
     "- downhill running loads the knees more, so shorten your stride and keep your feet under your hips\n"
     "- choose flatter routes for long runs this month, for example the riverside path towards matosinhos\n"
     "- add two short strength sessions a week: squats, step-downs and glute bridges, 3 sets of 12\n"
     "- your brooks ghost shoes are only a few months old, so the shoes are unlikely to be the cause\n"
     "- if the pain lasts more than a week or swells, see a physiotherapist"),
    ("Ok. Can you build me a simple strength routine I can do at home in 20 minutes?",
     "- warm-up, 3 minutes: leg swings, hip circles, 20 calf raises\n"
     "- circuit, 3 rounds: 12 squats, 10 step-downs per leg from a low step, 15 glute bridges\n"
     "- add 30 seconds of side plank per side and 10 single-leg deadlifts per leg in each round\n"
     "- cool-down, 3 minutes: calf and hip-flexor stretches\n"
     "- do it twice a week, not on the day before your long run"),
    ("Now the Douro trip. We want to go in October for a weekend. How do we get there without a car?",
     "- take the train from porto são bento to pinhão on the douro line, about 2 hours 30 minutes\n"
     "- the line follows the river, so the views are the trip itself, and there are no winding roads\n"
     "- sit on the right-hand side going up-river for the best views\n"
     "- buy tickets on the cp website or app a few days ahead for weekend trains\n"
     "- from pinhão, most quintas can be reached on foot or by a short taxi ride"),
    ("Where should we stay? We liked Pinhão last time.",
     "- look for a small guesthouse or a quinta with a few rooms in or near pinhão\n"
     "- with about 400 euros for two, aim at 100-130 euros a night for two nights\n"
     "- choose one within walking distance of the station, since you have no car\n"
     "- october is harvest season, so book soon: rooms fill up early\n"
     "- check whether breakfast is included, as it saves 15-20 euros a day"),
    ("What can we do there besides wine tasting? Rui gets bored of tastings fast.",
     "- the river boat trip you enjoyed last time: one-hour trips leave from pinhão\n"
     "- walk the trail from pinhão up to casal de loivos for the viewpoint, about 4 km and 300 m of climbing\n"
     "- take the train further up the line to tua or pocinho for a different stretch of the valley\n"
     "- join a grape harvest morning at a quinta that offers it in october\n"
     "- pack a picnic from the local market instead of a long lunch"),
    ("Can you give me a budget breakdown for the weekend?",
     "- trains: about 30 euros return each, so 60 euros\n"
     "- guesthouse: two nights at about 120 euros, so 240 euros\n"
     "- boat trip: about 15 euros each, so 30 euros\n"
     "- food: 70 euros for both days if breakfast is included and one lunch is a picnic\n"
     "- total: about 400 euros, right at your budget, so keep the tastings to one"),
    ("Changing subject. My German class is tomorrow and I always freeze when speaking. Any tips?",
     "- prepare three short stories about your week in german tonight and say them out loud twice\n"
     "- learn a few filler phrases to buy time: 'also', 'wie sagt man', 'moment mal'\n"
     "- ask jonas for 5 minutes of free conversation at the start of each class\n"
     "- add the words you were missing to anki right after class\n"
     "- mistakes at a2 are expected: aim to keep talking, not to be perfect"),
    ("How long will it take me to get from A2 to B2? I need B2 for the nursing recognition.",
     "- a common estimate is 350-450 more hours of study to go from a2 to b2\n"
     "- at 6 hours a week that is about 14-18 months, which is tight for a move next september\n"
     "- at 8-10 hours a week (class, anki and daily listening) you could reach b2 in about 10-12 months\n"
     "- check with the austrian authority which certificate they accept, for example ösd or goethe\n"
     "- book the exam date early so you have a fixed target"),
    ("What documents do I need for the diploma recognition in Austria?",
     "- your nursing diploma and transcript of courses, with hours of theory and practice\n"
     "- proof of professional experience, for example a letter from helena or human resources\n"
     "- certified german translations of each document\n"
     "- your passport and a proof of german level, usually b2\n"
     "- the exact list changes: check the austrian ministry of health page for nursing recognition"),
    ("Money question: can we afford Vienna? We pay 850 here in rent.",
     "- a one-bedroom flat in vienna costs roughly 900-1,200 euros a month, so rent would go up\n"
     "- nursing salaries in austria are usually higher than in portugal, which offsets much of that\n"
     "- at 300 euros a month, you will have about 3,600 euros saved by the move\n"
     "- plan for a deposit of up to three months' rent plus agency fees\n"
     "- list your fixed costs in both cities side by side before deciding on a district"),
    ("I also want a bike for commuting here in Porto before we move. Road bike or something else?",
     "- for 7 km with a downhill morning and an uphill ride home, a hybrid or a gravel bike suits better\n"
     "- a second-hand bike at 250-400 euros is fine, and you can take it to vienna\n"
     "- get lights, mudguards and a good lock: porto is wet in winter\n"
     "- choose lower gears for the climb home after a night shift\n"
     "- a test ride on a hill before buying tells you more than the spec sheet"),
    ("Pimenta has a vet check next week. Anything I should ask about her kidneys?",
     "- ask for her latest blood values (creatinine, sdma) compared with the last check\n"
     "- ask whether her kidney diet still fits or needs adjusting at 11 years old\n"
     "- ask about her blood pressure, which is often checked with kidney disease in cats\n"
     "- ask how much water she should drink and whether wet food would help\n"
     "- write the answers down, as you will be tired after a night shift"),
    ("My mum's birthday is coming up. Any gift ideas that aren't boring?",
     "- a day trip together to braga to see marta and the kids, with lunch booked\n"
     "- a framed print of her own caldo verde recipe in her handwriting\n"
     "- a small herb box like the one on your balcony, with basil and parsley\n"
     "- a cooking class for the two of you, with a vegetarian menu\n"
     "- a photo book of the family, with pictures of tomás and leonor"),
    ("Back to running: the race is in November. What should my longest run be before it?",
     "- your longest run should be about 18 km, three weeks before the race\n"
     "- build the long run by 1-2 km a week from today's 14 km\n"
     "- keep the week total under your 40 km limit to protect your shins and knees\n"
     "- taper in the last two weeks: cut the distance by a third, keep some pace\n"
     "- practise your race breakfast and gels on the long runs"),
    ("Last thing: I have four night shifts starting Tuesday. How do I keep my sleep and runs on track?",
     "- sleep 9:00-15:00 as usual with the blackout curtains, plus a 20-minute nap before each shift\n"
     "- cap coffee at two cups and none after 3:00\n"
     "- keep only easy runs during the shifts: two of 6-8 km after you wake up\n"
     "- move thursday's club session to the weekend after your last night\n"
     "- on the first day off, sleep until noon only, so you can reset for the night"),
]
